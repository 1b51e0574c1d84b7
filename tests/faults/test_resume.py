"""6.12 / 6.14 resuming and per-rank classes: a Loader resumed from ``state_dict()`` at random batches delivers the
uninterrupted run's batches (0 missing, 0 duplicate), another world size resumes only at an epoch boundary, and each
rank reports its class histogram."""
from __future__ import annotations

import numpy as np
import pytest

import mmdata
from mmdata.errors import ConfigError
from mmdata.rng import make_rng
from mmdata.samplers import batch_rng, tuple_disturb
from mmdata.shards.write import write_split
from mmdata.types import Field
from tests.conftest import TOY_FEATURES, toy_samples, write_toy

MODS = ("image", "feat_audio", "text")
KEYS = [f"toy/train/s{i:04d}" for i in range(43)]


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory):
    """43 toy samples in 11 shards, the last one short (uneven ranks: padding on some)."""
    directory = tmp_path_factory.mktemp("resume") / "toy" / "train"
    write_toy(directory, n=43, max_samples=4)
    return directory


def _load(split, **options):
    return mmdata.load(split, batch_size=3, seed=5, **options)


def _batches(loader) -> list[list[str]]:
    return [list(batch["__key__"]) for batch in loader]


def _interrupted(split, stop: int, **options) -> dict:
    """Read ``stop`` batches, then leave the loop as a crash would; the state a checkpoint would hold."""
    loader = _load(split, **options)
    iterator = iter(loader)
    for _ in range(stop):
        next(iterator)
    return loader.state_dict()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [1, 2])
def test_trn_06_smp_07_resuming_from_the_state_at_random_batches_misses_and_repeats_nothing(split, workers, world):
    """TRN-06 / SMP-07: for each rank, a fresh loader given the state saved after ``s`` batches (random ``s``)
    yields exactly the uninterrupted run's batches from ``s`` on, for 0 and 2 workers: over all ranks every
    sample is delivered once (the padding rows aside, counted in ``padded``), and the state is the same on
    every rank."""
    stops = make_rng(0, "resume", workers, world).integers(1, len(_load(split, world_size=world)), 3).tolist()
    for stop in stops:
        delivered, states = [], []
        for rank in range(world):
            options = {"world_size": world, "rank": rank, "epoch": 2}
            full = _batches(_load(split, **options))
            state = _interrupted(split, stop, num_workers=workers, **options)
            states.append(state)
            resumed = _load(split, num_workers=workers, **options)
            resumed.load_state_dict(state)
            rest = _batches(resumed)
            assert state["epoch"] == 2 and state["batch"] == stop and full[:stop] + rest == full
            keys = [k for batch in full[:stop] + rest for k in batch]
            delivered += keys[:len(keys) - resumed.padded]
            assert resumed.state_dict()["epoch"] == 3 and resumed.state_dict()["batch"] == 0
        assert sorted(delivered) == KEYS  # 0 missing, 0 duplicate
        assert all(s == states[0] for s in states)


def test_smp_07_tuples_after_a_resume_are_the_uninterrupted_runs(split):
    """SMP-07: tuples seeded by (seed, epoch, batch index) continue identically when the batch index is taken
    from the restored state (``enumerate(loader, state["batch"])``)."""
    def tuples(loader, start: int) -> list[np.ndarray]:
        return [tuple_disturb(len(b["__key__"]), batch_rng(5, 1, i), modalities=MODS, num_negatives=2).idx
                for i, b in enumerate(loader, start)]

    full = tuples(_load(split, epoch=1, drop_last=True), 0)
    state = _interrupted(split, 6, epoch=1, drop_last=True)
    resumed = _load(split, drop_last=True)
    resumed.set_epoch(0)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the loop's own set_epoch of the restored epoch keeps the position
    rest = tuples(resumed, state["batch"])
    assert len(rest) == len(full) - 6 and all(np.array_equal(a, b) for a, b in zip(full[6:], rest))


@pytest.mark.parametrize("new_world", [1, 4])
def test_trn_06_mid_epoch_resume_on_another_world_size_is_a_config_error(split, new_world):
    """TRN-06, documented rule: another world size deals the rows differently, so a mid-epoch state saved on 2
    ranks is refused on 1 or 4, naming the change; so is a state past the epoch's end."""
    state = _interrupted(split, 3, world_size=2, rank=1)
    loader = _load(split, world_size=new_world, rank=0)
    with pytest.raises(ConfigError, match=rf"world_size 2 -> {new_world}.*epoch boundary"):
        loader.load_state_dict(state)
    with pytest.raises(ConfigError, match="batch_size 3 -> 4"):
        mmdata.load(split, batch_size=4, seed=5, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="past the"):
        _load(split, world_size=2).load_state_dict({**state, "batch": 10_000})


@pytest.mark.parametrize("partition", ["shard", "sample"])
@pytest.mark.parametrize("new_world", [1, 4])
def test_trn_06_resume_at_an_epoch_boundary_on_another_world_size_covers_the_epoch_exactly(split, partition,
                                                                                          new_world):
    """TRN-06: a finished epoch on 2 ranks saves the start of the next; resumed on 1 or 4 ranks that epoch
    delivers every sample exactly once (padding aside) with equal batch counts on every rank."""
    old = _load(split, world_size=2, rank=0, epoch=1, partition=partition)
    _batches(old)
    state = old.state_dict()
    assert (state["epoch"], state["batch"]) == (2, 0)
    delivered, counts = [], set()
    for rank in range(new_world):
        loader = _load(split, world_size=new_world, rank=rank, partition=partition)
        loader.load_state_dict(state)
        keys = [k for batch in _batches(loader) for k in batch]
        assert loader.epoch == 2
        counts.add(len(loader))
        delivered += keys[:len(keys) - loader.padded]
    assert len(counts) == 1 and sorted(delivered) == KEYS


def test_smp_05_per_rank_class_histograms_show_a_class_absent_from_a_rank(tmp_path):
    """SMP-05: shards written class by class (extreme skew) leave some rank without a class; ``class_counts``
    lists every class per rank (0 for the absent one), and the ranks' histograms sum to the split's
    ``class_counts`` when no rank pads. A label without classes has no histogram (None)."""
    samples = sorted(toy_samples(30), key=lambda s: int(s["label"]))  # 10 a, 10 b, 10 c: one class per shard
    split = tmp_path / "toy" / "train"
    manifest = write_split(samples, TOY_FEATURES, split, corpus="toy", split="train", max_samples=5)
    ranks = [mmdata.load(split, world_size=3, rank=r, seed=1) for r in range(3)]
    histograms = [loader.class_counts for loader in ranks]
    assert all(list(h) == ["a", "b", "c"] for h in histograms)
    assert all(0 in h.values() for h in histograms) and all(loader.padded == 0 for loader in ranks)
    assert {c: sum(h[c] for h in histograms) for c in "abc"} == manifest["class_counts"]
    multi = {**TOY_FEATURES, "label": Field("float32", (3,), "npy", classes=("a", "b", "c"))}
    hot = [{**s, "label": np.eye(3, dtype=np.float32)[int(s["label"])] + np.float32([0, 0, 1])} for s in samples]
    hot = [{**s, "label": np.minimum(s["label"], 1)} for s in hot]
    write_split(hot, multi, tmp_path / "multi", corpus="toy", split="train", max_samples=5)
    assert mmdata.load(tmp_path / "multi").class_counts == {"a": 10, "b": 10, "c": 30}
    values = {**TOY_FEATURES, "label": Field("float32", (), "npy")}
    floats = [{**s, "label": np.float32(i)} for i, s in enumerate(samples)]
    write_split(floats, values, tmp_path / "values", corpus="toy", split="train", max_samples=5)
    assert mmdata.load(tmp_path / "values").class_counts is None
