"""Synthetic mini corpora written in each corpus's real on-disk layout, with learnable signal.

Each module exposes ``generate(out, *, seed=0, **sizes) -> Path``: it writes the raw layout under ``out``
and returns the root to hand to the corpus reader.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmdata.synth import avmnist, mosi
from mmdata.synth import crema_d, mosei
from mmdata.synth import hateful_memes, mmimdb, snli_ve
from mmdata.synth import nyuv2, stocks
from mmdata.synth import sunrgbd

SYNTHS: dict[str, Callable[..., Path]] = {
    "avmnist": avmnist.generate,
    "mosi": mosi.generate,
    "mosei": mosei.generate,
    "crema_d": crema_d.generate,
    "mmimdb": mmimdb.generate,
    "hateful_memes": hateful_memes.generate,
    "snli_ve": snli_ve.generate,
    "nyuv2": nyuv2.generate,
    "stocks": stocks.generate,
    "sunrgbd": sunrgbd.generate,
}
