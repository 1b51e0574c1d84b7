"""Synthetic mini corpora written in each corpus's real on-disk layout, with learnable signal.

Each module exposes ``generate(out, *, seed=0, **sizes) -> Path``: it writes the raw layout under ``out``
and returns the root to hand to the corpus reader.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmdata.synth import avmnist, mosi

SYNTHS: dict[str, Callable[..., Path]] = {
    "avmnist": avmnist.generate,
    "mosi": mosi.generate,
}
