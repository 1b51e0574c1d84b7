"""Helpers shared by the benchmarks: the AV-MNIST mini they measure on, and a timer."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS


def avmnist_shards(workdir: Path, train: int = 2000, test: int = 200) -> Path:
    """Synthesise and shard the AV-MNIST mini once under ``workdir``; return the corpus shard directory."""
    out = workdir / "shards" / "avmnist"
    if not (out / "train" / "manifest.json").exists():
        root = SYNTHS["avmnist"](workdir / "raw", train=train, test=test)
        shard_corpus("avmnist", root, out, max_samples=250, progress=False)
    return out


def timed(fn: Callable[[], object], sync: bool = False) -> tuple[float, object]:
    """Seconds one call took, and its result (synchronising the GPU around it when asked)."""
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result
