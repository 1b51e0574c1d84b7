"""The pickle releases of a MOSI/MOSEI mini: MMSA, MulT and MultiBench raw, from one split's data."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from mmdata.synth.affect.spec import ALIGNED_LEN, SynthSpec


def dump(path: Path, obj: dict) -> None:
    """Pickle ``obj`` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Protocol 4 is what the releases' Python 3 loaders read, and pinning it keeps the bytes stable.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def left_pad(seqs: list[np.ndarray], columns: tuple[int, ...] | None = None) -> np.ndarray:
    """[N, 50, D] float32: each [W, D] sequence left-zero-padded (MulT/SDK convention), last 50 steps kept."""
    seqs = [s[:, list(columns)] if columns else s for s in seqs]
    out = np.zeros((len(seqs), ALIGNED_LEN, seqs[0].shape[1]), dtype=np.float32)
    for i, seq in enumerate(seqs):
        kept = seq[-ALIGNED_LEN:]
        out[i, ALIGNED_LEN - len(kept):] = kept
    return out


def right_pad(seqs: list[np.ndarray], length: int, columns: tuple[int, ...] | None = None) -> np.ndarray:
    """[N, length, D] float32: each frame sequence followed by zeros (the unaligned files' padding)."""
    seqs = [s[:, list(columns)] if columns else s for s in seqs]
    out = np.zeros((len(seqs), length, seqs[0].shape[1]), dtype=np.float32)
    for i, seq in enumerate(seqs):
        out[i, :len(seq)] = seq
    return out


def _av(spec: SynthSpec, data: dict, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    """(audio, vision) as the MMSA/MulT pickles hold them: column subsets, aligned or frame-rate."""
    vision, columns = spec.pickle_vision
    if aligned:
        return (left_pad([a["covarep"] for a in data["aligned"]], spec.pickle_audio),
                left_pad([a[vision] for a in data["aligned"]], columns))
    return (right_pad([f["covarep"] for f in data["frames"]], spec.unaligned_len["audio"], spec.pickle_audio),
            right_pad([f[vision] for f in data["frames"]], spec.unaligned_len["vision"], columns))


def mmsa(spec: SynthSpec, data: dict, *, aligned: bool) -> dict:
    """One split in the MMSA layout (keys in the release's order)."""
    labels = data["labels"]
    sign = np.sign(labels).astype(np.int64)
    audio, vision = _av(spec, data, aligned)
    split = {
        "raw_text": np.array(data["raw_text"], dtype=object), "audio": audio, "vision": vision,
        "id": np.array([f"{v}$_${c}" for v, c in data["clips"]], dtype=object),
        "text": data["bert"], "text_bert": data["text_bert"],
        "annotations": np.array([("Negative", "Neutral", "Positive")[s + 1] for s in sign], dtype=object),
        "classification_labels": (sign + 1).astype(np.float32), "regression_labels": labels,
    }
    if not aligned:
        split["audio_lengths"], split["vision_lengths"] = data["audio_len"], data["vision_len"]
    return split


def mult(spec: SynthSpec, data: dict, *, aligned: bool) -> dict:
    """One split in the MulT layout: left-padded GloVe text, no lengths, labels [N, 1, 1], ids [N, 3].

    The third id column holds the segment's start time in seconds (its meaning in the real file is
    unverified; readers use the first two).
    """
    audio, vision = _av(spec, data, aligned)
    ids = [(v.encode(), c.encode(), f"{t['segment'][0]:.2f}".encode())
           for (v, c), t in zip(data["clips"], data["timing"])]
    return {"vision": vision, "audio": audio, "text": left_pad([f["glove"] for f in data["frames"]]),
            "labels": data["labels"].reshape(-1, 1, 1), "id": np.array(ids, dtype="S")}


def multibench(spec: SynthSpec, data: dict) -> dict:
    """One split of MultiBench's raw pickle: word-aligned GloVe / full COVAREP / FACET, ids ``video[k]``."""
    ids = [f"{v}[{int(c) - 1}]" for v, c in data["clips"]]
    return {"vision": left_pad([a[spec.multibench_vision] for a in data["aligned"]]),
            "audio": left_pad([a["covarep"] for a in data["aligned"]]),
            "text": left_pad([f["glove"] for f in data["frames"]]),
            "labels": data["labels"].reshape(-1, 1, 1), "id": np.array(ids)}
