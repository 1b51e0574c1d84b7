"""Small fixture builders the fault tests share (plain functions, so each test says what it injects)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from mmdata.corpora.base import Skip


def digests(directory: Path) -> dict[str, str]:
    """File name -> sha256 of every file in ``directory`` (byte-identity of two outputs)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def split_items(items: list) -> tuple[list[dict], list[Skip]]:
    """(samples, skips) of a reader's stream."""
    return [i for i in items if not isinstance(i, Skip)], [i for i in items if isinstance(i, Skip)]


def tone(seconds: float = 1.0, rate: int = 16000, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    """A sine wave float32 [samples]: audible, not clipped, not silent."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def crema_clip(root: Path, name: str, wave: np.ndarray | None = None, rate: int = 16000,
               subtype: str = "PCM_16", frames: int = 12) -> None:
    """One CREMA-D clip (``AudioWAV/<name>.wav`` + ``VideoFlash/<name>.flv``) in the release layout."""
    from mmdata.synth.crema_d import write_flv

    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (root / "VideoFlash").mkdir(parents=True, exist_ok=True)
    sf.write(str(root / "AudioWAV" / f"{name}.wav"), tone(1.2, rate) if wave is None else wave, rate,
             subtype=subtype)
    write_flv(root / "VideoFlash" / f"{name}.flv", np.full((frames, 64, 64, 3), 120, np.uint8))
