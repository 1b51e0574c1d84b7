"""Planning an epoch: which index rows each rank reads, in which batches (from counts alone, before any media).

1. Partition (``partition=``). ``"shard"`` (default): shards are shuffled with ``make_rng(seed, "shards",
   epoch)`` and dealt round-robin to ranks, so the ranks hold disjoint shards that together cover the split
   (fewer shards than ranks is an error); each rank then shuffles its own rows with ``make_rng(seed,
   "samples", epoch, rank)``. ``"sample"``: all rows are shuffled once with ``make_rng(seed, "samples",
   epoch)`` and rank ``r`` takes rows ``r::world_size`` of that order, so rank counts differ by at most one
   (padding at most one row per rank) at the price of per-rank shard locality (every rank reads every shard).
2. Equalise so every rank runs the same number of batches (an uneven epoch hangs DDP collectives,
   streaming#447): by default each rank pads by repeating its first rows up to the largest rank's count
   (counted in ``Loader.padded``); with ``drop_remainder`` each rank is cut to the smallest rank's count
   instead (counted in ``Loader.dropped``; at most ``world_size - 1`` rows in all under ``"sample"``).
   Padding and cut rows sit at the end of a rank's order; ``drop_last`` cuts a partial last batch (counted
   in ``dropped`` too, and a cut padding row is no longer counted as padded).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmdata.errors import ConfigError
from mmdata.rng import make_rng
from mmdata.types import Field

#: The ways rows are split over ranks (see the module docstring).
PARTITIONS = ("shard", "sample")


@dataclass
class EpochPlan:
    """One rank's epoch, planned from index counts alone.

    Attributes:
        batches: arrays of index rows, in the order the rank yields them.
        padded: repeated rows among the delivered ones (equalising ranks).
        dropped: rows of this rank's share not delivered this epoch (``drop_remainder``, ``drop_last``).
    """

    batches: list[np.ndarray]
    padded: int
    dropped: int


def _rank_shares(shard_rows: Sequence[np.ndarray], *, seed: int, epoch: int, world_size: int, shuffle: bool,
                 partition: str) -> list[np.ndarray]:
    """Every rank's rows before its own shuffle and equalising (only the counts of other ranks are used)."""
    if partition == "sample":
        rows = np.concatenate(shard_rows)
        if len(rows) < world_size:
            raise ConfigError(f"{len(rows)} rows cannot be split over {world_size} ranks")
        # One global order: ranks interleave it, so their counts differ by at most one.
        rows = make_rng(seed, "samples", epoch).permutation(rows) if shuffle else rows
        return [rows[r::world_size] for r in range(world_size)]
    if len(shard_rows) < world_size:
        raise ConfigError(f"{len(shard_rows)} shards cannot be split over {world_size} ranks; write more shards "
                         f"(lower shard max_samples), use fewer ranks or partition='sample'")
    order = make_rng(seed, "shards", epoch).permutation(len(shard_rows)) if shuffle else np.arange(len(shard_rows))
    return [np.concatenate([shard_rows[s] for s in order[r::world_size]]) for r in range(world_size)]


def subset_rows(rows: Sequence[int], total: int, where: str) -> np.ndarray:
    """``rows`` as sorted unique int64 index rows of a split of ``total`` rows.

    Raises:
        ConfigError: an empty subset or rows out of range (named with ``where``, the split directory).
    """
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    bad = rows[(rows < 0) | (rows >= total)]
    if len(bad) or not len(rows):
        raise ConfigError(f"{where}: rows must be a non-empty subset of 0..{total - 1}; got {len(rows)} rows, "
                          f"out of range: {bad[:5].tolist()}")
    return rows


def restrict(shard_rows: Sequence[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    """The index rows of each shard that are in ``rows`` (shard order kept; shards left empty are dropped, so
    the planner deals only real rows)."""
    return [kept for r in shard_rows if len(kept := r[np.isin(r, rows)])]


def plan_rank(shard_rows: Sequence[np.ndarray], *, batch_size: int, seed: int = 0, epoch: int = 0, rank: int = 0,
              world_size: int = 1, shuffle: bool = True, drop_last: bool = False, partition: str = "shard",
              drop_remainder: bool = False) -> EpochPlan:
    """The batches rank ``rank`` reads in ``epoch``, with its padded and dropped counts.

    Every rank gets the same number of batches; see the module docstring for the rules. Over all ranks,
    ``delivered - padded + dropped`` equals the split's rows, each real row delivered at most once.

    Raises:
        ValueError: fewer shards (``"shard"``) or rows (``"sample"``) than ranks, an unknown partition, or a
            non-positive batch size.
    """
    if partition not in PARTITIONS:
        raise ConfigError(f"partition must be one of {PARTITIONS}, got {partition!r}")
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
    shares = _rank_shares(shard_rows, seed=seed, epoch=epoch, world_size=world_size, shuffle=shuffle,
                          partition=partition)
    sizes = [len(rows) for rows in shares]
    target = min(sizes) if drop_remainder else max(sizes)
    mine = shares[rank]
    if shuffle and partition == "shard":
        mine = make_rng(seed, "samples", epoch, rank).permutation(mine)
    kept = mine[:target]
    padded, dropped = target - len(kept), len(mine) - len(kept)
    mine = np.concatenate([kept, np.resize(kept, padded)]) if padded else kept
    count = target // batch_size if drop_last else -(-target // batch_size)
    cut = target - min(target, count * batch_size)  # drop_last's partial batch: padding goes first (at the end)
    padded, dropped = padded - min(padded, cut), dropped + max(0, cut - padded)
    return EpochPlan([mine[i * batch_size:(i + 1) * batch_size] for i in range(count)], padded, dropped)


def class_histogram(labels: np.ndarray, field: Field) -> dict[str, int] | None:
    """Rows per class name (every class listed, 0 when absent); positives per class for multi-hot labels.

    Args:
        labels: index ``label`` values of the rows (class ids, or one vector per row for multi-hot labels).
        field: the label's Field.

    Returns:
        ``{class name: count}``, or None for labels without classes (values, boxes). Rows marked unlabeled
        (``field.unlabeled``) fall in no class.
    """
    if field.classes is None or len(field.shape) >= 2:
        return None
    k = len(field.classes)
    if field.shape:  # multi-hot: one 0/1 vector per row
        counts = np.asarray(list(labels), dtype=np.float64).reshape(len(labels), k).sum(axis=0)
    else:
        ids = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(ids[(ids >= 0) & (ids < k)], minlength=k)
    return {name: int(n) for name, n in zip(field.classes, counts)}
