"""Reading shards: ``load(...)`` -> an iterable of torch batch dicts (design section 5, reliability D4/D7/D8).

How an epoch is planned (partition, equalising ranks, batch order) is :mod:`mmdata.shards.plan`'s; batch
``b`` of a rank is produced by DataLoader worker ``b % num_workers`` by random access through the member offsets in
``index.parquet``, so the batch sequence is identical for any worker count.

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

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.rng import make_rng
from mmdata.shards.collate import collate
from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX, manifest_features, read_manifest, sha256_file
from mmdata.shards.plan import PARTITIONS, EpochPlan, class_histogram, plan_rank, restrict, subset_rows
from mmdata.shards.tar import MemberReader
from mmdata.types import Features, Field, Sample, View

DEFAULT_SHARDS_ROOT = Path("data/shards")
Augment = Callable[[Sample, np.random.Generator], Sample]


def resolve_split_dir(source: str | Path, split: str, shards_root: str | Path = DEFAULT_SHARDS_ROOT) -> Path:
    """The split directory for a corpus name, a corpus shard directory or a split directory."""
    path = Path(source)
    for candidate in (path, path / split, Path(shards_root) / str(source) / split):
        if (candidate / "manifest.json").exists():
            return candidate
    raise ShardIntegrityError(
        f"no completed shards for {source!r} split {split!r} (looked in {path}, {path / split} and "
        f"{Path(shards_root) / str(source) / split}); run `mmdata shard` or `dvc repro` first")


@dataclass
class SplitShards:
    """A split on disk, checked against its manifest: schema, shard records and the index columns."""

    directory: Path
    manifest: dict[str, Any]
    stored: Features  # the schema of the tar members
    index: dict[str, np.ndarray]
    shard_rows: list[np.ndarray]  # index rows of each shard, in manifest order
    view: View | None = None

    @property
    def label(self) -> str:
        """The label field's name."""
        return self.manifest["label_field"]

    @property
    def features(self) -> Features:
        """The schema of the samples a reader gets (the stored schema, or the viewed one under a View)."""
        return self.view.features(self.stored, self.label) if self.view else self.stored

    @classmethod
    def open(cls, directory: str | Path, verify: bool = False) -> SplitShards:
        """Open and check a split directory (see the module docstring for what is checked)."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        index = read_index(directory / INDEX)
        names = [s["name"] for s in manifest["shards"]]
        position = {name: i for i, name in enumerate(names)}
        shard_of_row = np.array([position.get(s, -1) for s in index["shard"]], dtype=np.int64)
        if (shard_of_row < 0).any() or len(shard_of_row) != manifest["rows"]:
            raise ShardIntegrityError(f"{directory / INDEX}: {len(shard_of_row)} rows for {manifest['rows']} "
                                      f"rows in the manifest, or rows naming unlisted shards")
        shard_rows = [np.flatnonzero(shard_of_row == i) for i in range(len(names))]
        for record, rows in zip(manifest["shards"], shard_rows):
            _check_shard(directory / record["name"], record, len(rows), verify)
        view = manifest.get("view")
        view = View(view["kind"], tuple(view["fields"]), view["length"]) if view else None
        return cls(directory, manifest, manifest_features(manifest), index, shard_rows, view)


def _check_shard(path: Path, record: dict[str, Any], rows: int, verify: bool) -> None:
    if not path.exists():
        raise ShardIntegrityError(f"{path}: shard listed in the manifest is missing")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise ShardIntegrityError(f"{path}: {size} bytes, manifest says {record['bytes']} (truncated or altered)")
    if rows != record["rows"]:
        raise ShardIntegrityError(f"{path}: index has {rows} rows, manifest says {record['rows']}")
    if verify and (digest := sha256_file(path)) != record["sha256"]:
        raise ShardIntegrityError(f"{path}: sha256 {digest[:16]}..., the manifest says {record['sha256'][:16]}... "
                                  f"(corrupted, or replaced by another run's shard)")


class _EpochStream(IterableDataset):
    """One rank's epoch: worker ``w`` of ``W`` yields batches ``w, w + W, ...`` of the plan."""

    def __init__(self, shards: SplitShards, plan: list[np.ndarray], fields: Sequence[str], augment: Augment | None,
                 seed: int, epoch: int) -> None:
        self.shards, self.plan, self.fields = shards, plan, tuple(fields)
        self.augment, self.seed, self.epoch = augment, seed, epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        shards = self.shards
        reader = MemberReader(shards.directory, shards.stored, shards.index, self.fields, view=shards.view,
                              label=shards.label)
        try:
            for rows in self.plan[worker::workers]:
                samples = [reader.read(int(r)) for r in rows]
                if self.augment is not None:
                    # Keyed by sample, not by worker: the same draw for any worker count (AUG-03).
                    samples = [self.augment(s, make_rng(self.seed, "augment", self.epoch, s["__key__"]))
                               for s in samples]
                yield collate(samples, self.shards.features, self.fields)
        finally:
            reader.close()


class Loader:
    """A re-iterable epoch of batch dicts for one rank; call :meth:`set_epoch` (or let the loop) per epoch.

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
                 rows: Sequence[int] | None = None) -> None:
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
        plan, start = self.plan(), self._start
        self._start, self.position = 0, start  # a restored position applies to one iteration only
        stream = _EpochStream(self.shards, plan[start:], self.fields, self.augment, self.seed, self.epoch)
        if self.num_workers == 0:
            return self._counted(iter(stream))
        # batch_size=None: workers build whole batches (on 2 cores, per-sample transfer lost to no workers).
        return self._counted(iter(DataLoader(stream, batch_size=None, num_workers=self.num_workers)))

    def _counted(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield ``batches``, advancing :attr:`position` (what :meth:`state_dict` saves)."""
        for batch in batches:
            self.position += 1
            yield batch


def load(source: str | Path, split: str = "train", *, fields: Sequence[str] | None = None, batch_size: int = 32,
         shuffle: bool | None = None, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
         num_workers: int = 0, drop_last: bool = False, augment: Augment | None = None, verify: bool = False,
         shards_root: str | Path = DEFAULT_SHARDS_ROOT, partition: str = "shard",
         drop_remainder: bool = False, rows: Sequence[int] | None = None) -> Loader:
    """Open a shard split for training or evaluation.

    Args:
        source: a corpus name (read from ``shards_root/<name>/<split>``), a corpus shard directory or a split
            directory.
        split: "train", "valid", "test".
        fields: fields to decode (default: all); only these members are read.
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: epoch-seeded shuffle (default: True for "train", False otherwise).
        seed, epoch: the shuffle and augmentation seeds (same values -> same batches, any worker count).
        rank, world_size: this process's share for distributed training (disjoint rows per rank, equal
            batch counts).
        num_workers: DataLoader worker processes decoding batches.
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

    Returns:
        A :class:`Loader`: iterate for batch dicts (see :func:`collate`), ``len()`` for batches per rank,
        ``state_dict()`` / ``load_state_dict()`` to resume mid-epoch, ``class_counts`` for the rank's classes.
    """
    shards = SplitShards.open(resolve_split_dir(source, split, shards_root), verify=verify)
    return Loader(shards, fields=list(shards.features) if fields is None else list(fields),
                  batch_size=batch_size, shuffle=(split == "train") if shuffle is None else shuffle, seed=seed,
                  epoch=epoch, rank=rank, world_size=world_size, num_workers=num_workers, drop_last=drop_last,
                  augment=augment, partition=partition, drop_remainder=drop_remainder, rows=rows)
