"""6.12 Sampling: singleton classes, resuming mid-epoch, and pools built from the index (never from
skipped samples)."""
from __future__ import annotations

import itertools

import numpy as np

import mmdata
from mmdata.corpora.base import Skip
from mmdata.rng import make_rng
from mmdata.samplers import batch_rng, negative_dataset, same_label_pairs, tuple_disturb
from mmdata.shards.read import SplitShards
from mmdata.shards.write import write_split
from tests.conftest import TOY_FEATURES, toy_samples, write_toy

MODS = ("image", "feat_audio", "text")


def test_smp_01_a_singleton_class_has_no_positive_and_is_never_retried():
    """SMP-01: the item of a class with one member gets no positive pair (the caller counts it from the
    pairs); the others still pair within their class."""
    labels = np.array([0, 0, 1, 2, 2, 2])
    i, j = same_label_pairs(labels)
    assert 2 not in set(i.tolist()) | set(j.tolist())
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 0), (3, 4), (3, 5), (4, 3), (4, 5), (5, 3), (5, 4)]


def test_smp_03_duplicate_content_under_two_ids_is_reported_and_both_are_kept(tmp_path):
    """SMP-03: two ids holding the same media (the label left out of the comparison: a relabelled copy is the case
    that matters) are both written, and the manifest reports the group by its keys."""
    samples = toy_samples(12)
    samples[9] = {**samples[4], "__key__": "toy/train/s0009", "label": np.int64(2)}
    report = write_split(samples, TOY_FEATURES, tmp_path / "s", corpus="toy", split="train")["report"]
    assert report["written"] == 12 and report["skipped"] == 0
    assert report["duplicate_content"] == {"groups": 1, "samples": 2, "keys": [["toy/train/s0004", "toy/train/s0009"]]}
    clean = write_split(toy_samples(12), TOY_FEATURES, tmp_path / "t", corpus="toy", split="train")["report"]
    assert clean["duplicate_content"] == {"groups": 0, "samples": 0, "keys": []}


def _run(split, seed: int, epoch: int, skip: int = 0) -> list[tuple[list[str], np.ndarray]]:
    """(keys, tuples) per batch of a fresh loader, from batch ``skip`` on; tuples seeded by batch position."""
    loader = mmdata.load(split, batch_size=6, seed=seed, epoch=epoch)
    out = []
    for b, batch in itertools.islice(enumerate(loader), skip, None):
        tuples = tuple_disturb(len(batch["__key__"]), batch_rng(seed, epoch, b), modalities=MODS, num_negatives=3)
        out.append((list(batch["__key__"]), tuples.idx))
    return out


def test_smp_07_a_restart_at_step_s_draws_the_same_tuples_with_no_missing_or_repeated_anchor(toy_split):
    """SMP-07: batches and tuples depend only on (seed, epoch, batch index): a new process that skips the s
    batches already trained on sees the uninterrupted run's anchors and tuples from step s on."""
    full = _run(toy_split, seed=4, epoch=2)
    s = 3
    resumed = _run(toy_split, seed=4, epoch=2, skip=s)
    assert len(resumed) == len(full) - s
    for (keys_a, idx_a), (keys_b, idx_b) in zip(full[s:], resumed):
        assert keys_a == keys_b and np.array_equal(idx_a, idx_b)
    anchors = [k for keys, _ in full[:s] + resumed for k in keys]
    assert sorted(anchors) == sorted(set(anchors)) and len(anchors) == 40  # 0 missing, 0 duplicate


def test_smp_08_dataset_pools_come_from_the_index_so_skipped_samples_never_appear(tmp_path):
    """SMP-08: a sample skipped at write time (here a NaN feature) is not in the index, so the negative
    dataset over the split can only point at written rows."""
    samples = toy_samples(20)
    samples[4]["feat_audio"][0, 0] = np.nan
    bad = samples[4]["__key__"]
    write_split([*samples, Skip("toy/train/lost", "raw/lost", "decode_error", "unreadable")], TOY_FEATURES,
                tmp_path / "s", corpus="toy", split="train", max_samples=6, max_skip_fraction=0.2)
    shards = SplitShards.open(tmp_path / "s")
    tuples = negative_dataset(shards, make_rng(0, "negative_dataset", 0), modalities=MODS)
    keys = np.asarray(shards.index["key"])
    assert tuples.idx.shape == (19, 1, 3) and tuples.idx.min() >= 0 and tuples.idx.max() < len(keys)
    assert bad not in set(keys[tuples.idx.ravel()]) and "toy/train/lost" not in set(keys)


def test_smp_06_same_seed_same_tuples_other_seed_other_tuples(tmp_path):
    """SMP-06: two runs with one seed give the same batches and tuples; another seed gives others."""
    write_toy(tmp_path / "s", n=24, max_samples=6)
    a, b, c = _run(tmp_path / "s", 1, 0), _run(tmp_path / "s", 1, 0), _run(tmp_path / "s", 2, 0)
    assert all(ka == kb and np.array_equal(ia, ib) for (ka, ia), (kb, ib) in zip(a, b))
    assert [k for k, _ in a] != [k for k, _ in c]
