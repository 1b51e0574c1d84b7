"""Helpers shared by the benchmarks: the AV-MNIST mini they measure on, and a timer."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmdata.shards.build import shard_corpus
from mmdata.shards.verified import SETTLE_NS
from mmdata.synth import SYNTHS


def settled(directory: Path) -> Path:
    """Wait until every file under ``directory`` is older than the reader's settle time; return ``directory``.

    The reader records a shard as verified (and caches its shared decodes) only once the shard has not changed
    for ``SETTLE_NS`` (2 s: time stamp granularity, see ``mmdata/shards/verified.py``). Shards written a moment
    ago are therefore re-verified on every read, which no user sees after a real ``mmdata shard``: measuring
    them would time that window, not the reader.
    """
    newest = max((p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()), default=0)
    wait = (newest + SETTLE_NS - time.time_ns()) / 1e9 + 0.05
    if wait > 0:
        time.sleep(wait)
    return directory


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
