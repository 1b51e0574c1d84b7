"""Producing a rank's batches: the epoch stream that the main process or each worker process runs.

The rank's batch sequence is a function of (plan settings, epoch, batch index) alone, so a worker computes its
share itself (:mod:`mmdata.shards.pool` only tells it where to begin): the stream is epoch ``e`` from batch ``b``,
then epochs ``e + step, e + 2 step, ...`` from batch 0, and worker ``w`` of ``W`` produces its items ``w, w + W,
...``. Running on across epochs lets workers prefetch the next epoch's first batches (a one-batch epoch still
keeps two workers busy) and needs no restart per epoch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mmdata.rng import make_rng
from mmdata.shards.collate import Empty, collate
from mmdata.types import Features

Augment = Callable[[dict, np.random.Generator], dict]


class EpochStream:
    """A rank's batches from a start (epoch, batch) on, across epochs; worker ``w`` yields items ``w::W``.

    Args:
        plan: ``plan(epoch) -> list of int64 index-row arrays`` (a picklable ``functools.partial`` of
            :func:`mmdata.shards.plan.plan_rank`).
        open_reader: ``open_reader() -> MemberReader`` of the requested fields (picklable, called once per
            process: each worker opens its own file descriptors).
        features, fields, augment, seed: the split's schema, the fields each batch holds and how samples are
            augmented (keyed by seed, epoch and sample key).
    """

    def __init__(self, plan: Callable[[int], list[np.ndarray]], open_reader: Callable[[], Any],
                 features: Features, fields: Sequence[str], augment: Augment | None, seed: int) -> None:
        self.plan, self.open_reader, self.features, self.fields = plan, open_reader, features, tuple(fields)
        self.augment, self.seed = augment, seed
        self._reader: Any = None  # one per process, kept across epochs (descriptors do not grow)

    def reader(self) -> Any:
        """This process's member reader (opened lazily, so a worker opens its own descriptors)."""
        if self._reader is None:
            self._reader = self.open_reader()
        return self._reader

    def close(self) -> None:
        """Close this process's shard descriptors (a later batch reopens them)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def batch(self, epoch: int, rows: np.ndarray, empty: Empty = np.empty) -> dict[str, Any]:
        """Read, augment and collate the samples of ``rows`` (a batch of ``epoch``); ``empty`` allocates the
        batch arrays (see :func:`mmdata.shards.collate.collate`)."""
        reader = self.reader()
        if hasattr(reader, "read_batch"):  # decodes a member shared by several rows once
            # Without an augment the arrays read straight into the batch are the batch's: read them into
            # ``empty`` (a worker's slot). An augment makes new arrays; the read ones would only take slot room.
            samples = reader.read_batch([int(r) for r in rows], empty if self.augment is None else np.empty)
        else:
            samples = [reader.read(int(r)) for r in rows]
        if self.augment is not None:
            # Keyed by sample, not by worker: the same draw for any worker count (AUG-03).
            samples = [self.augment(s, make_rng(self.seed, "augment", epoch, s["__key__"])) for s in samples]
        return collate(samples, self.features, self.fields, empty)

    def items(self, epoch: int, start: int, step: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(epoch, batch, rows) from ``epoch`` batch ``start`` on, then epochs ``epoch + step, ...``.

        Ends after an epoch without batches (with ``step`` 0 or all epochs empty it would never yield again).
        """
        while True:
            batches = self.plan(epoch)
            for b in range(start, len(batches)):
                yield epoch, b, batches[b]
            if not batches:
                return
            epoch, start = epoch + step, 0

    def worker_items(self, worker: int, workers: int, epoch: int, start: int,
                     step: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """Worker ``worker`` of ``workers``'s share of :meth:`items`: items ``worker, worker + workers, ...``, as
        (item number, epoch, batch, rows)."""
        for i, item in enumerate(self.items(epoch, start, step)):
            if i % workers == worker:
                yield (i, *item)


def pin(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its tensors in pinned (page-locked) memory, for asynchronous copies to the GPU."""
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
