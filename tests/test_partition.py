"""Splitting an epoch over ranks: both partitions, padding or cutting, on uneven shards (reliability TRN-01/03)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmdata
from mmdata.shards.plan import plan_rank
from mmdata.shards.write import write_split
from tests.conftest import TOY_FEATURES, toy_samples

#: Uneven shard sizes (reliability 6.14 TRN-01's 10,10,10,3,7, extended to 9 shards so 8 ranks fit).
SIZES = (10, 10, 10, 3, 7, 10, 1, 6, 4)
WORLDS = (1, 2, 3, 4, 8)
#: Bytes per shard: ten small toy samples (4 tar members of 1024 bytes each) and some slack.
MAX_BYTES = 10 * 4096 + 1000


def _uneven_samples(sizes: tuple[int, ...]) -> list[dict]:
    """Toy samples where the last one of each intended shard carries a long text that fills the shard.

    The writer rotates when the next sample would pass ``max_bytes``, so after a filler nothing fits.
    """
    samples, i = toy_samples(sum(sizes)), 0
    for size in sizes:
        i += size
        small = 4096 * (size - 1)  # the small samples before the filler, 4 members of 1024 bytes each
        samples[i - 1]["text"] = "x" * (MAX_BYTES - small - 4700)
    return samples


@pytest.fixture(scope="module")
def uneven_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy split whose shards hold SIZES samples (checked against the manifest)."""
    directory = tmp_path_factory.mktemp("uneven") / "toy" / "train"
    manifest = write_split(_uneven_samples(SIZES), TOY_FEATURES, directory, corpus="toy", split="train",
                           max_samples=10, max_bytes=MAX_BYTES)
    assert tuple(s["samples"] for s in manifest["shards"]) == SIZES
    return directory


def _keys(loader) -> list[list[str]]:
    return [list(batch["__key__"]) for batch in loader]


def _check_epoch(split: Path, world: int, partition: str, drop_remainder: bool = False) -> list[int]:
    """Read every rank with 0, 1 and 2 workers; check the ledger; return each rank's padded count."""
    real, counts, padded, dropped = [], set(), [], 0
    for rank in range(world):
        runs = [mmdata.load(split, batch_size=4, rank=rank, world_size=world, num_workers=w, seed=7, epoch=2,
                            partition=partition, drop_remainder=drop_remainder) for w in (0, 1, 2)]
        batches = [_keys(loader) for loader in runs]
        assert batches[0] == batches[1] == batches[2]  # the same batches for any worker count
        loader = runs[0]
        counts.add(len(batches[0]))
        assert len(loader) == len(batches[0])
        keys = [k for batch in batches[0] for k in batch]
        real += keys[:len(keys) - loader.padded]  # padding sits at the end of a rank's order
        assert set(keys[len(keys) - loader.padded:]) <= set(keys[:len(keys) - loader.padded])
        padded.append(loader.padded)
        dropped += loader.dropped
    assert len(counts) == 1  # equal batch counts on every rank: no DDP hang
    assert len(real) == len(set(real))  # no real sample twice
    assert len(real) + dropped == sum(SIZES)  # every sample delivered once or counted as dropped
    if not drop_remainder:
        assert sorted(real) == [f"toy/train/s{i:04d}" for i in range(sum(SIZES))]
    return padded


@pytest.mark.parametrize("world", WORLDS)
def test_shard_partition_pads_to_the_largest_rank(uneven_split, world):
    padded = _check_epoch(uneven_split, world, "shard")
    assert min(padded) == 0


@pytest.mark.parametrize("world", WORLDS)
def test_sample_partition_pads_at_most_one_row_per_rank(uneven_split, world):
    padded = _check_epoch(uneven_split, world, "sample")
    assert max(padded) <= 1 and sum(padded) == -sum(SIZES) % world


@pytest.mark.parametrize("world", (3, 8))
def test_drop_remainder_cuts_at_most_world_minus_one_rows(uneven_split, world):
    assert _check_epoch(uneven_split, world, "sample", drop_remainder=True) == [0] * world
    dropped = sum(mmdata.load(uneven_split, rank=r, world_size=world, partition="sample",
                              drop_remainder=True).dropped for r in range(world))
    assert dropped == sum(SIZES) % world


def _plans(sizes, world, **options) -> list:
    offsets = np.cumsum((0,) + tuple(sizes))
    shard_rows = [np.arange(a, b) for a, b in zip(offsets[:-1], offsets[1:])]
    return [plan_rank(shard_rows, rank=r, world_size=world, **options) for r in range(world)]


def _real_rows(plan) -> np.ndarray:
    """The rows a plan delivers, less its padding (which sits at the end)."""
    rows = np.concatenate(plan.batches) if plan.batches else np.empty(0, dtype=np.int64)
    return rows[:len(rows) - plan.padded]


@pytest.mark.parametrize("partition", ("shard", "sample"))
@pytest.mark.parametrize("drop_remainder", (False, True))
@pytest.mark.parametrize("drop_last", (False, True))
@pytest.mark.parametrize("shuffle", (False, True))
def test_plan_ledger_balances_for_every_option(partition, drop_remainder, drop_last, shuffle):
    for world in WORLDS:
        for epoch in range(3):
            plans = _plans(SIZES, world, batch_size=3, epoch=epoch, partition=partition, shuffle=shuffle,
                           drop_remainder=drop_remainder, drop_last=drop_last)
            assert len({len(p.batches) for p in plans}) == 1
            real = np.concatenate([_real_rows(p) for p in plans])
            assert len(real) == len(set(real.tolist()))
            assert len(real) + sum(p.dropped for p in plans) == sum(SIZES)
            assert not (drop_remainder and any(p.padded for p in plans))


def test_cut_rows_differ_between_epochs_under_sample_partition():
    cut = set()
    for epoch in range(6):
        plans = _plans(SIZES, 4, batch_size=100, epoch=epoch, partition="sample", drop_remainder=True)
        kept = set(np.concatenate([p.batches[0] for p in plans]).tolist())
        cut |= set(range(sum(SIZES))) - kept
    assert len(cut) > sum(SIZES) % 4


def test_default_is_shard_partition_and_options_are_checked(uneven_split):
    loader = mmdata.load(uneven_split, world_size=2, rank=1)
    assert loader.partition == "shard" and loader.dropped == 0
    with pytest.raises(ValueError, match="partition must be one of"):
        mmdata.load(uneven_split, partition="row")


def test_sample_partition_allows_more_ranks_than_shards(tmp_path):
    split = tmp_path / "toy" / "train"
    write_split(toy_samples(10), TOY_FEATURES, split, corpus="toy", split="train", max_samples=5)
    with pytest.raises(ValueError, match="partition='sample'"):
        mmdata.load(split, world_size=3)
    lengths = {len(mmdata.load(split, world_size=3, rank=r, partition="sample", batch_size=2)) for r in range(3)}
    assert lengths == {2}



def test_rows_subset_reads_exactly_those_rows(uneven_split):
    """A few-shot subset (label_fraction rows) is read whole, once each, and nothing else (any shard layout)."""
    from mmdata.rng import make_rng
    from mmdata.samplers import label_fraction

    full = mmdata.load(uneven_split, fields=["label"], batch_size=4, seed=3)
    subset = label_fraction(full.shards.index, make_rng(0, "few-shot"), fractions=[0.3])[0.3]
    for world in (1, 2):
        keys = [k for rank in range(world) for k in _flat(mmdata.load(
            uneven_split, fields=["label"], batch_size=4, seed=3, rows=subset, rank=rank, world_size=world,
            partition="sample", drop_remainder=True))]
        assert set(keys) <= {full.shards.index["key"][r] for r in subset}
        assert len(keys) == len(set(keys)) >= len(subset) - (world - 1)
    with pytest.raises(mmdata.ConfigError, match="rows must be a non-empty subset"):
        mmdata.load(uneven_split, rows=[10**6])


def _flat(loader) -> list[str]:
    return [k for batch in loader for k in batch["__key__"]]
