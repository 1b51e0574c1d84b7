"""Producing a rank's batches, in the main process or in persistent DataLoader workers (design section 5b).

The rank's batch sequence is a function of (plan settings, epoch, batch index) alone, so workers compute it
themselves: :class:`EpochStream` reads where to begin (epoch, batch, epoch step) from a small shared-memory
tensor written by the main process before each (re)start, and then runs on across epochs: the stream is
epoch ``e`` from batch ``b``, then epochs ``e + step, e + 2 step, ...`` from batch 0, and worker ``w`` of
``W`` yields its items ``w, w + W, ...``. :class:`WorkerPool` keeps one DataLoader with persistent workers per
Loader; an iteration that continues where the stream stands (the next epoch, as a training loop asks) takes
the batches the workers already prefetched, anything else (another epoch, a resume, an abandoned epoch)
restarts the stream through DataLoader's own reset, which drains what was in flight. Each batch carries its
(epoch, batch) tag, checked on arrival.

Transfer: a worker writes each batch into a reused shared-memory slot and sends only its name and layout
(:mod:`mmdata.shards.slots`); the main process hands out views of the slot. Strings travel pickled.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmdata.rng import make_rng
from mmdata.shards.collate import collate
from mmdata.shards.slots import Slots, forget, register
from mmdata.types import Features

Augment = Callable[[dict, np.random.Generator], dict]
_TOKENS = itertools.count()  # tells apart the slots of streams alive at once in one process


class EpochStream(IterableDataset):
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
        # Written by the main process before each (re)start; shared before workers fork, so they see updates.
        self.start = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._reader: Any = None  # one per process, kept across epochs (descriptors do not grow)
        self.token = next(_TOKENS)
        # Slot release counters [workers, slots], shared before the workers start (set by WorkerPool).
        self.released = torch.zeros(0, 0, dtype=torch.int64)
        self._slots: Slots | None = None  # a worker's, made in the worker

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

    def batch(self, epoch: int, rows: np.ndarray) -> dict[str, Any]:
        """Read, augment and collate the samples of ``rows`` (a batch of ``epoch``)."""
        reader = self.reader()
        if hasattr(reader, "read_batch"):  # decodes a member shared by several rows once
            samples = reader.read_batch([int(r) for r in rows])
        else:
            samples = [reader.read(int(r)) for r in rows]
        if self.augment is not None:
            # Keyed by sample, not by worker: the same draw for any worker count (AUG-03).
            samples = [self.augment(s, make_rng(self.seed, "augment", epoch, s["__key__"])) for s in samples]
        return collate(samples, self.features, self.fields)

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

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, start, step = (int(v) for v in self.start.tolist())
        if info and self._slots is None:
            self._slots = Slots(self.token, worker, self.released.numpy()[worker])
        if self._slots is not None:
            self._slots.restart()
        for i, (e, b, rows) in enumerate(self.items(epoch, start, step)):
            if i % workers == worker:
                yield e, b, self._slots.write(self.batch(e, rows)) if info else self.batch(e, rows)


def pin(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its tensors in pinned (page-locked) memory, for asynchronous copies to the GPU."""
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class WorkerPool:
    """One DataLoader over an :class:`EpochStream`, its workers kept across epochs when ``persistent``.

    Args:
        stream: the stream the workers run.
        workers: worker processes (> 0).
        prefetch_factor: batches each worker prepares ahead.
        pin_memory: pin each batch's buffer (in DataLoader's pin thread) for asynchronous GPU copies.
        persistent: keep the workers between epochs (else they start and stop with every epoch).
    """

    def __init__(self, stream: EpochStream, workers: int, *, prefetch_factor: int, pin_memory: bool,
                 persistent: bool) -> None:
        self.stream, self.persistent = stream, persistent
        # Slots per worker: its batches in flight, the one it writes, and the one the consumer holds.
        stream.released = torch.zeros(workers, prefetch_factor + 2, dtype=torch.int64).share_memory_()
        self.loader = DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=prefetch_factor,
                                 pin_memory=pin_memory, persistent_workers=persistent)
        self.iterator: Iterator | None = None
        self.next: tuple[int, int] | None = None  # (epoch, batch) the stream stands at, when known
        self.last_epoch: int | None = None
        self.step, self.generation = 1, 0

    def _restart(self, epoch: int, start: int) -> None:
        # Guess what follows this epoch: the same epoch again when it was repeated (an evaluation loader
        # without set_epoch), else the next one (a training loop's set_epoch(e + 1)).
        self.step = 0 if epoch == self.last_epoch else 1
        self.stream.start.copy_(torch.tensor([epoch, start, self.step]))
        if self.iterator is None:  # fresh workers: fresh slots
            self.stream.released.zero_()
            register(self.stream.token, self.stream.released)
        self.iterator = iter(self.loader)  # starts the workers, or resets them (in-flight batches are drained)

    def epoch(self, epoch: int, start: int, count: int) -> Iterator[dict[str, Any]]:
        """Batches ``start .. start + count - 1`` of ``epoch`` as batch dicts.

        Raises:
            RuntimeError: a worker died, or another iteration of the same pool started meanwhile.
        """
        if self.iterator is None or self.next != (epoch, start):
            self._restart(epoch, start)
        self.generation += 1
        generation, self.next, self.last_epoch = self.generation, None, epoch
        try:
            for b in range(start, start + count):
                if generation != self.generation:
                    raise RuntimeError("a newer iteration of this Loader started; iterate one epoch at a time")
                got_epoch, got, packed = next(self.iterator, (None, None, None))
                if (got_epoch, got) != (epoch, b):  # never expected: the stream and the plan disagree
                    raise RuntimeError(f"worker batch (epoch {got_epoch}, batch {got}), expected ({epoch}, {b})")
                yield packed.unpack()
        except GeneratorExit:  # the consumer left mid-epoch: the stream position is unknown, restart next time
            raise
        except BaseException:
            self.close()  # a failed worker or DataLoader cannot resume: start afresh next time
            raise
        if self.persistent:
            self.next = (epoch + self.step, 0)
        else:
            self.close()

    def close(self) -> None:
        """Stop the workers (a later epoch starts new ones)."""
        iterator, self.iterator, self.next = self.iterator, None, None
        self.loader._iterator = None  # the DataLoader's own reference to its persistent iterator
        if iterator is not None:
            iterator._shutdown_workers()
        forget(self.stream.token)
