"""Reading shards: ``load(...)`` -> an iterable of torch batch dicts (design section 5, reliability D4/D7/D8).

How an epoch is planned (partition, equalising ranks, batch order) is :mod:`mmdata.shards.plan`'s; the batches
are read by random access through the member offsets in ``index.parquet``, in this process or in persistent
worker processes that each build whole batches (:mod:`mmdata.shards.pool`), so the batch sequence is identical
for any worker count. ``Loader.close()`` (or ``with mmdata.load(...) as loader``) stops the workers.

Resuming: the batch sequence is a function of (seed, epoch, batch index) alone, so a checkpoint needs only
``Loader.state_dict()`` (``{"epoch", "batch", "plan"}``, the same on every rank) and a new process continues
with ``load_state_dict``: the next iteration yields batches ``batch, batch + 1, ...`` of that epoch, whatever
the worker count. Mid-epoch (``batch > 0``) the plan settings (world size, batch size, seed, partition, ... and
the split's shards) must be those of the checkpoint, else :class:`ConfigError`: another world size deals the
rows differently, so no position in the new plan continues the old one. At an epoch boundary (``batch == 0``;
a finished epoch saves the next epoch's start) any settings resume with exact coverage of the epoch.

Integrity: opening a split checks that every shard exists with the manifest's byte size and that the index
holds the manifest's count per shard (a truncated shard fails here, naming it); every member read checks
its tar header and the payload's crc32 from the index (a flipped bit in what is read fails, naming shard,
key and field). ``verify=True`` also re-hashes every shard against the manifest's sha256 at open.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmdata.errors import ConfigError
from mmdata.shards.plan import PARTITIONS, EpochPlan, class_histogram, plan_rank, restrict, subset_rows
from mmdata.shards.split import DEFAULT_SHARDS_ROOT, SplitShards, resolve_split_dir  # noqa: F401 (re-exported)
from mmdata.shards.pool import WorkerPool
from mmdata.shards.remote import RemoteReader, open_split
from mmdata.shards.stream import EpochStream, pin
from mmdata.shards.members import MemberReader
from mmdata.types import Features, Sample

Augment = Callable[[Sample, np.random.Generator], Sample]


def _plan_batches(shard_rows: list[np.ndarray], settings: dict[str, Any], epoch: int) -> list[np.ndarray]:
    """The rank's batches of ``epoch`` (module-level, so the partial a worker receives pickles)."""
    return plan_rank(shard_rows, epoch=epoch, **settings).batches


class Loader:
    """A re-iterable epoch of batch dicts for one rank; call :meth:`set_epoch` (or let the loop) per epoch.

    With workers, one iteration runs at a time (starting another ends the first with an error), the workers
    live until :meth:`close` (or the end of a ``with`` block, or the Loader's deletion), and the tensors of a
    batch are views of a shared-memory slot that is reused only once no tensor viewing it is left.

    Attributes:
        shards: the opened split.
        fields: the fields decoded into each batch.
        padded: repeated rows this rank delivers in the current epoch (equalising batch counts).
        dropped: rows of this rank's share it does not deliver this epoch (``drop_remainder``, ``drop_last``).
        position: batches of the current epoch yielded so far (counting the ones skipped by a resume).
    """

    def __init__(self, shards: SplitShards, *, fields: Sequence[str], batch_size: int, shuffle: bool, seed: int,
                 epoch: int, rank: int, world_size: int, num_workers: int, drop_last: bool,
                 augment: Augment | None, partition: str = "shard", drop_remainder: bool = False,
                 rows: Sequence[int] | None = None, persistent_workers: bool = True, prefetch_factor: int = 2,
                 pin_memory: bool | None = None) -> None:
        unknown = sorted(set(fields) - set(shards.features))
        if unknown:
            raise ConfigError(f"unknown field(s) {unknown} for {shards.directory}; available: {sorted(shards.features)}")
        self.shards, self.fields = shards, tuple(fields)
        self.rows = None if rows is None else subset_rows(rows, shards.manifest["rows"], str(shards.directory))
        self.shard_rows = shards.shard_rows if self.rows is None else restrict(shards.shard_rows, self.rows)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.drop_last, self.augment = drop_last, augment
        self.partition, self.drop_remainder = partition, drop_remainder
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        # Pinning needs a GPU; None pins exactly when one is there to feed.
        self.pin_memory = torch.cuda.is_available() and pin_memory is not False
        self._producer: EpochStream | WorkerPool | None = None  # built at the first iteration (see _produce)
        self._producer_key: tuple = ()
        self.position = self._start = 0  # _start: where the next iteration begins (set by load_state_dict)
        self.plan()  # fail now, not in the first training step, if ranks/batch settings are impossible

    @property
    def features(self) -> Features:
        """Schema of the requested fields."""
        return {name: self.shards.features[name] for name in self.fields}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle the next iteration uses.

        A position restored by :meth:`load_state_dict` is kept when ``epoch`` is the restored one (a training
        loop calls ``set_epoch`` before every epoch, the resumed one included) and dropped otherwise.
        """
        if epoch != self.epoch:
            self.position = self._start = 0
        self.epoch = epoch

    def _plan(self, epoch: int) -> EpochPlan:
        return plan_rank(self.shard_rows, batch_size=self.batch_size, seed=self.seed, epoch=epoch,
                         rank=self.rank, world_size=self.world_size, shuffle=self.shuffle, drop_last=self.drop_last,
                         partition=self.partition, drop_remainder=self.drop_remainder)

    def plan(self) -> list[np.ndarray]:
        """This rank's batches of index rows for the current epoch (see :func:`plan_rank`)."""
        plan = self._plan(self.epoch)
        self.padded, self.dropped = plan.padded, plan.dropped
        return plan.batches

    @property
    def class_counts(self) -> dict[str, int] | None:
        """Rows per class this rank delivers in the current epoch, padding included (see :func:`class_histogram`).

        A class missing from the rank's shards shows as 0 (reliability SMP-05); None when the label has no classes.
        """
        batches = self.plan()
        rows = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        return class_histogram(self.shards.index["label"][rows], self.shards.features[self.shards.label])

    def _settings(self) -> dict[str, Any]:
        """What fixes the batches of an epoch besides the epoch itself (the rank does not: all ranks keep step)."""
        shards = self.shards.manifest["shards"]
        split = hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()[:16]
        subset = None if self.rows is None else hashlib.sha256(self.rows.tobytes()).hexdigest()[:16]
        return {"seed": self.seed, "world_size": self.world_size, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last, "partition": self.partition,
                "drop_remainder": self.drop_remainder, "rows": self.shards.manifest["rows"], "split": split,
                "subset": subset}

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands, for a checkpoint: ``{"epoch", "batch", "plan"}`` (plain data).

        ``batch`` counts the batches of ``epoch`` already yielded: save it after the step that consumed the last
        of them. A finished epoch is saved as batch 0 of the next one. Every rank saves the same state.
        """
        epoch, batch = self.epoch, self.position
        if batch and batch >= len(self):
            epoch, batch = epoch + 1, 0
        return {"epoch": epoch, "batch": batch, "plan": self._settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next iteration yields batches ``state["batch"]:`` of its epoch.

        Raises:
            ConfigError: a mid-epoch state (``batch > 0``) saved under other plan settings (world size, batch
                size, seed, partition, drop options or another version of the split), or past the epoch's end.
        """
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if batch:
            now = self._settings()
            changed = {k: (v, now.get(k)) for k, v in state["plan"].items() if now.get(k) != v}
            if changed:
                shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
                raise ConfigError(f"{self.shards.directory}: cannot resume epoch {epoch} at batch {batch} with other "
                                  f"settings than the checkpoint's ({shown}): they deal the rows differently. Keep "
                                  f"the checkpoint's settings, or resume at an epoch boundary (state batch 0)")
            total = len(self._plan(epoch).batches)
            if batch > total:
                raise ConfigError(f"{self.shards.directory}: checkpoint batch {batch} is past the {total} batches of "
                                  f"epoch {epoch}")
        self.epoch, self.position = epoch, batch
        self._start = batch

    def __len__(self) -> int:
        """Batches in the current epoch (a resumed iteration yields the last ``len - state["batch"]`` of them)."""
        return len(self.plan())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan, start, epoch = self.plan(), self._start, self.epoch
        self._start, self.position = 0, start  # a restored position applies to one iteration only
        producer = self._produce()
        if isinstance(producer, WorkerPool):
            return self._counted(producer.epoch(epoch, plan, start))
        batches = (producer.batch(epoch, rows) for rows in plan[start:])
        return self._counted(map(pin, batches) if self.pin_memory else batches)

    def _produce(self) -> EpochStream | WorkerPool:
        """The stream (no workers) or worker pool for the current settings; rebuilt when they changed."""
        settings = {"batch_size": self.batch_size, "seed": self.seed, "rank": self.rank,
                    "world_size": self.world_size, "shuffle": self.shuffle, "drop_last": self.drop_last,
                    "partition": self.partition, "drop_remainder": self.drop_remainder}
        key = (settings, self.fields, self.augment, id(self.shard_rows), self.num_workers, self.persistent_workers,
               self.prefetch_factor, self.pin_memory)
        if self._producer is None or key != self._producer_key:
            self.close()  # workers forked under other settings would plan other batches
            s = self.shards
            opener = MemberReader if s.remote is None else functools.partial(RemoteReader, s.remote)
            reader = functools.partial(opener, s.directory, s.stored, s.index, self.fields, view=s.view,
                                       label=s.label)
            stream = EpochStream(functools.partial(_plan_batches, self.shard_rows, settings), reader, s.features,
                                 self.fields, self.augment, self.seed)
            self._producer, self._producer_key = stream, key
            if self.num_workers:
                self._producer = WorkerPool(stream, self.num_workers, prefetch_factor=self.prefetch_factor,
                                            pin_memory=self.pin_memory, persistent=self.persistent_workers)
        return self._producer

    def close(self) -> None:
        """Stop the worker processes and close the shard files (a later iteration reopens them)."""
        producer, self._producer = getattr(self, "_producer", None), None
        if producer is not None:
            producer.close()
            if isinstance(producer, WorkerPool):
                producer.stream.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings and position only: a copy starts its own workers."""
        return {**self.__dict__, "_producer": None, "_producer_key": ()}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit multiprocessing may be gone; daemons end anyway
            pass

    def _counted(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield ``batches``, advancing :attr:`position` (what :meth:`state_dict` saves)."""
        for batch in batches:
            self.position += 1
            yield batch


def process_group_share(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: both from the initialised ``torch.distributed`` process group when neither is
    given (``torchrun``); otherwise the given values, a missing rank being 0 and a missing world size 1."""
    distributed = torch.distributed
    if rank is None and world_size is None and distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return (0 if rank is None else rank), (1 if world_size is None else world_size)


def load(source: str | Path, split: str = "train", *, fields: Sequence[str] | None = None, batch_size: int = 32,
         shuffle: bool | None = None, seed: int = 0, epoch: int = 0, rank: int | None = None,
         world_size: int | None = None, num_workers: int = 0, drop_last: bool = False, augment: Augment | None = None, verify: bool = False,
         shards_root: str | Path = DEFAULT_SHARDS_ROOT, partition: str = "shard",
         drop_remainder: bool = False, rows: Sequence[int] | None = None, persistent_workers: bool = True,
         prefetch_factor: int = 2, pin_memory: bool | None = None, cache_dir: str | Path | None = None,
         cache_bytes: int | None = None, storage_options: dict[str, Any] | None = None) -> Loader:
    """Open a shard split for training or evaluation.

    Args:
        source: a corpus name (read from ``shards_root/<name>/<split>``), a corpus shard directory or a split
            directory; or the URL of one (``s3://bucket/prefix/<corpus>``, any fsspec URL; see
            :mod:`mmdata.shards.remote`).
        split: "train", "valid", "test".
        fields: fields to decode (default: all); only these members are read.
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: epoch-seeded shuffle (default: True for "train", False otherwise).
        seed, epoch: the shuffle and augmentation seeds (same values -> same batches, any worker count).
        rank, world_size: this process's share for distributed training (disjoint rows per rank, equal
            batch counts). Neither given: those of the initialised ``torch.distributed`` process group
            (``torchrun``), else 0 and 1.
        num_workers: worker processes decoding whole batches (0: in this process). This process also decodes a
            batch that its worker has not started when it is awaited (and cheap batches ahead; see
            :mod:`mmdata.shards.pool`): the batches are the same either way.
        persistent_workers: keep the workers across epochs, prefetching the next epoch's first batches
            (see :mod:`mmdata.shards.pool`); stop them with ``Loader.close()`` (or ``with``, or dropping it).
            A batch from workers is views of a shared-memory slot, reused once no tensor of it is left in this
            process: hand a batch to another process only as a copy (``clone()``).
        prefetch_factor: batches each worker prepares ahead; each worker keeps ``prefetch_factor + 2`` slots
            of a batch's size.
        pin_memory: put batches in pinned memory for fast asynchronous copies to a GPU (``.to(device,
            non_blocking=True)``); None (default) or True: when CUDA is available (``torch.cuda.is_available()``),
            False: never.
        drop_last: drop the last partial batch.
        augment: ``augment(sample, rng) -> sample`` applied per sample in the workers.
        verify: re-hash every shard against the manifest at open (slower; catches any corruption).
        shards_root: where corpus names are looked up.
        partition: ``"shard"`` (whole shards per rank; ranks pad to the largest rank's share, which can
            repeat many rows when shards are uneven) or ``"sample"`` (rows ``rank::world_size`` of one global
            shuffled order: at most one padded row per rank, but every rank reads every shard).
        drop_remainder: equalise ranks by cutting to the smallest share instead of padding (counted in
            ``Loader.dropped``; under ``"sample"`` at most ``world_size - 1`` rows in all, different each epoch
            when shuffled).
        rows: read only these index rows (a few-shot subset from
            :func:`mmdata.samplers.label_fraction`); default all.
        cache_dir, cache_bytes: a remote split's local shard cache and its bound in bytes (default
            ``$MMDATA_CACHE`` or ``~/.cache/mmdata``, ``$MMDATA_CACHE_BYTES`` or 16 GiB; see
            :mod:`mmdata.shards.cache`).
        storage_options: keyword arguments of the remote's fsspec filesystem (endpoint, credentials).

    Returns:
        A :class:`Loader`: iterate for batch dicts (see :func:`collate`), ``len()`` for batches per rank,
        ``state_dict()`` / ``load_state_dict()`` to resume mid-epoch, ``class_counts`` for the rank's classes.
    """
    shards = open_split(source, split, shards_root, verify=verify, cache_dir=cache_dir, cache_bytes=cache_bytes,
                        storage_options=storage_options)
    rank, world_size = process_group_share(rank, world_size)
    return Loader(shards, fields=list(shards.features) if fields is None else list(fields),
                  batch_size=batch_size, shuffle=(split == "train") if shuffle is None else shuffle, seed=seed,
                  epoch=epoch, rank=rank, world_size=world_size, num_workers=num_workers, drop_last=drop_last,
                  augment=augment, partition=partition, drop_remainder=drop_remainder, rows=rows,
                  persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, pin_memory=pin_memory)
