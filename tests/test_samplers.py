"""Samplers: one contract checker over every registered sampler, plus vectorised-vs-naive checks."""
from __future__ import annotations

import copy
import itertools
import math
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdata.rng import make_rng
from mmdata.samplers import (CONTEXT_OPTIONS, REGISTRY, SAMPLERS, NegativeReader, Sampler, allocate, batch_rng,
                             check_sampler_options, derangements, different_label_pairs, distinct_partners, drop_batch,
                             drop_tuples, gather, hard_negatives, is_derangement, label_fraction, marginal_permute,
                             modality_dropout, negative_dataset, negative_types, same_label_pairs, sampler_options,
                             tuple_disturb, tuple_infonce)
from mmdata.shards.codec import decode
from mmdata.shards.collate import collate
from mmdata.shards.read import SplitShards
from mmdata.types import DROPPED, Tuples
from tests.conftest import TOY_FEATURES, write_toy

ROOT = Path(__file__).resolve().parents[1]
MODS = ("image", "audio_spec", "text")
#: A full option block per registered sampler (what params.yaml held until the samplers become per-experiment
#: keys); ``modalities`` comes from the experiment's fields.
DEFAULTS = {
    "tuple_disturb": {"num_negatives": 16, "ratios": {"all": 1.0}, "k": 1},
    "marginal_permute": {"num_negatives": 1, "exclude_joint": False},
    "negative_dataset": {"exclude_joint": False},
    "modality_dropout": {"p": 0.6, "scope": "batch"},
    "label_fraction": {"fractions": [0.05, 0.1, 0.2]},
}


def configured(name: str, **extra) -> Sampler:
    """The sampler with its default options, the test modalities and overrides."""
    return Sampler(name, {**DEFAULTS[name], "modalities": MODS, **extra})


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


# ---- registry and option blocks agree ---------------------------------------------------------------------

def test_default_blocks_match_registry():
    """Every registered sampler has a complete, valid option block (a new option or sampler must get one)."""
    assert set(DEFAULTS) == set(REGISTRY)
    for name, block in DEFAULTS.items():
        assert set(block) == sampler_options(name) - CONTEXT_OPTIONS, name
        check_sampler_options(name, block)


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match=r"\['num_negs'\].*valid: \["):
        check_sampler_options("tuple_disturb", {"num_negs": 3})
    with pytest.raises(ValueError, match="registered"):
        Sampler("nope")


# ---- the contract every Tuples sampler meets ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(name):
    n, sampler = 24, configured(name)
    index = {"key": np.array([f"k{i}" for i in range(n)], dtype=object), "label": np.arange(n) % 3}
    before = copy.deepcopy(index)
    source = index if name == "negative_dataset" else n
    out = sampler(source, make_rng(1, name))
    assert isinstance(out, Tuples) and out.modalities == MODS
    assert out.idx.dtype == np.int64 and out.idx.shape[0] == n and out.idx.shape[2] == len(MODS)
    assert ((out.idx >= 0) & (out.idx < n)).all()
    anchors = np.arange(n)[:, None, None]
    assert not (out.idx == anchors).all(axis=2).any(), "a negative equals its anchor"
    assert np.array_equal(out.idx, sampler(source, make_rng(1, name)).idx)
    assert not np.array_equal(out.idx, sampler(source, make_rng(2, name)).idx)
    assert all(np.array_equal(index[k], before[k]) for k in index)
    clone = pickle.loads(pickle.dumps(sampler))
    assert np.array_equal(clone(source, make_rng(1, name)).idx, out.idx)


@pytest.mark.parametrize("name", ["marginal_permute", "negative_dataset"])
def test_marginal_samplers_derange_every_modality(name):
    out = configured(name)(30, make_rng(0))
    per_column = out.idx.transpose(1, 2, 0).reshape(-1, 30)  # [k * M, n]
    assert is_derangement(per_column).all()


def test_tuples_are_reproducible_by_batch_position_for_any_worker_count():
    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, b):
            return tuple_disturb(16, batch_rng(7, 2, b), modalities=MODS, num_negatives=4).idx

    def run(workers):
        loader = torch.utils.data.DataLoader(Batches(), batch_size=None, num_workers=workers)
        return [np.asarray(t) for t in loader]

    serial, parallel = run(0), run(2)
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))
    assert not np.array_equal(serial[0], serial[1])
    assert not np.array_equal(batch_rng(7, 2, 0).random(4), batch_rng(7, 3, 0).random(4))


# ---- derangements and partners ---------------------------------------------------------------------------------

def test_derangements_are_uniform():
    draws = derangements(4, make_rng(0), count=9000)
    assert is_derangement(draws).all()
    names, counts = np.unique(draws, axis=0, return_counts=True)
    assert len(names) == 9  # !4 = 9 derangements of 4 items, all reachable
    assert chi_square(counts) < 26.1  # chi-square(8) 99.9% quantile


@pytest.mark.parametrize("n", [2, 64, 65, 500])  # both sides of PERMUTE_MAX_POOL (argsort keys / permuted)
def test_derangements_of_any_size(n):
    draws = derangements(n, make_rng(n), count=7)
    assert draws.shape == (7, n) and is_derangement(draws).all()
    assert np.array_equal(draws, derangements(n, make_rng(n), count=7))  # seeded: reproducible
    assert is_derangement(derangements(n, make_rng(1))[None]).all()


def test_derangement_needs_two_items():
    with pytest.raises(ValueError, match="at least 2"):
        derangements(1, make_rng(0))


def test_distinct_partners_uniform_and_valid():
    out = np.concatenate([distinct_partners(5, 2, make_rng(0, s)) for s in range(3000)])
    rows = np.tile(np.arange(5), 3000)
    assert (out != rows[:, None]).all() and (out[:, 0] != out[:, 1]).all()
    row0 = np.sort(out[rows == 0], axis=1)
    _, counts = np.unique(row0, axis=0, return_counts=True)
    assert len(counts) == 6 and chi_square(counts) < 20.5  # C(4, 2) subsets; chi-square(5) 99.9%
    with pytest.raises(ValueError, match="at most 4"):
        distinct_partners(5, 5, make_rng(0))

@pytest.mark.parametrize("k", [30, 8])  # n above PERMUTE_MAX_POOL: permutations by Generator.permuted
def test_distinct_partners_large_pools_uniform_and_valid(k):
    big = distinct_partners(100, k, make_rng(1), count=400)
    assert big.shape == (400, 100, k) and (big != np.arange(100)[:, None]).all()
    assert (np.diff(np.sort(big, axis=-1), axis=-1) > 0).all()
    assert (np.sort(big, axis=1) == np.arange(100)[:, None]).all()  # every slot re-orders the whole batch
    assert chi_square(np.bincount(big[:, 0].ravel(), minlength=100)[1:]) < 148  # chi-square(98) 99.9%
    assert chi_square(np.bincount(big[:, 0, 0], minlength=100)[1:]) < 148  # the order is uniform too


# ---- tuple disturbing: exact ratios ---------------------------------------------------------------------------

def disturbed_modalities(out: Tuples) -> np.ndarray:
    """bool [n, k, M]: which modalities of each negative come from another item."""
    return out.idx != np.arange(out.idx.shape[0])[:, None, None]


@pytest.mark.parametrize("ratios,num,expected", [
    ({"all": 1, "image": 2, "audio_spec": 3}, 12, [2, 4, 6, 0]),
    ({"all": 0.1, "image": 0.25, "audio_spec": 0.65}, 7, [1, 2, 4, 0]),
    ([1, 2, 4], 7, [0, 1, 2, 4]),
    ([3, 1, 1, 1], 5, [2, 1, 1, 1]),  # quotas 2.5, 0.83 x 3: the larger remainders win
    ([1, 1, 1], 4, [0, 2, 1, 1]),  # a tie goes to the earlier type
])
def test_tuple_disturb_counts_are_exact(ratios, num, expected):
    out = tuple_disturb(20, make_rng(3), modalities=MODS, num_negatives=num, ratios=ratios)
    assert out.idx.shape == (20, num, 3)
    moved = disturbed_modalities(out)
    full = moved.all(axis=2)
    single = moved.sum(axis=2) == 1
    counts = [full.sum(axis=1)] + [(single & moved[:, :, m]).sum(axis=1) for m in range(3)]
    assert [set(c.tolist()) for c in counts] == [{e} for e in expected]
    types = negative_types(modalities=MODS, num_negatives=num, ratios=ratios)
    assert np.array_equal(np.where(full, -1, moved.argmax(axis=2))[0], types)


def test_allocation_is_largest_remainder():
    for ratios, total in [([1, 2, 3], 16), ([0.3, 0.3, 0.4], 11), ([1e-9, 1.0], 3), ([2.5, 0, 7.5], 9)]:
        counts = allocate(ratios, total)
        quota = total * np.array(ratios) / sum(ratios)
        assert counts.sum() == total and (np.abs(counts - quota) < 1).all()
        assert (counts[np.array(ratios) == 0] == 0).all()


def test_k_disturbed_and_each_type_has_distinct_partners():
    out = tuple_disturb(10, make_rng(0), modalities=MODS, num_negatives=9, ratios=[1, 1, 1], k=2)
    moved = disturbed_modalities(out)
    assert (moved.sum(axis=2) == 2).all()
    types = negative_types(modalities=MODS, num_negatives=9, ratios=[1, 1, 1])
    assert moved[:, np.arange(9), types].all()
    for t in range(3):
        partners = out.idx[:, types == t, t]
        assert all(len(set(row)) == len(row) for row in partners.tolist())
        others = out.idx[:, types == t][moved[:, types == t]].reshape(10, 3, 2)
        assert (others[..., 0] == others[..., 1]).all()  # the k modalities come from one other item
    full = tuple_disturb(10, make_rng(0), modalities=MODS, num_negatives=9, ratios=[1, 1, 1], k=3)
    assert disturbed_modalities(full).all() and (full.idx == full.idx[..., :1]).all()  # k = M: full negatives
    with pytest.raises(ValueError, match="k must be"):
        tuple_disturb(10, make_rng(0), modalities=MODS, num_negatives=3, k=4)


@pytest.mark.parametrize("n,num", [(12, 11), (6, 12)])  # enough other items for one draw / too few
def test_partners_are_distinct_across_slots_when_the_batch_allows(n, num):
    out = tuple_disturb(n, make_rng(2), modalities=MODS, num_negatives=num, ratios=[1, 1, 1, 1])
    moved = disturbed_modalities(out)
    assert moved.any(axis=2).all()  # every negative differs from its anchor
    partner = np.where(moved, out.idx, -1).max(axis=2)  # [n, K] the other item of each negative
    types = negative_types(modalities=MODS, num_negatives=num, ratios=[1, 1, 1, 1])
    groups = [np.arange(num)] if num <= n - 1 else [np.flatnonzero(types == t) for t in range(-1, 3)]
    for slots in groups:  # all slots of an anchor, or each type's slots when the batch is too small
        assert all(len(set(row)) == len(row) for row in partner[:, slots].tolist())


def test_disturbed_partners_are_uniform_over_other_items():
    draws = [tuple_disturb(6, make_rng(5, s), modalities=MODS, num_negatives=1, ratios={"image": 1}).idx[0, 0, 0]
             for s in range(5000)]
    _, counts = np.unique(draws, return_counts=True)
    assert len(counts) == 5 and chi_square(counts) < 18.5  # anchor 0's partner: uniform over 1..5; chi2(4) 99.9%


def test_bad_ratios_are_rejected():
    for ratios in [{"video": 1}, [1, 2], [-1, 1, 1], [0, 0, 0]]:
        with pytest.raises(ValueError):
            tuple_disturb(8, make_rng(0), modalities=MODS, num_negatives=4, ratios=ratios)


# ---- marginal permutations and the negative dataset ----------------------------------------------------------

def test_marginal_permute_exclude_joint():
    out = marginal_permute(3, make_rng(0), modalities=MODS[:2], num_negatives=200, exclude_joint=True)
    assert not (out.idx[..., 0] == out.idx[..., 1]).any()
    plain = marginal_permute(3, make_rng(0), modalities=MODS[:2], num_negatives=200)
    assert (plain.idx[..., 0] == plain.idx[..., 1]).any()  # the product of marginals does contain them
    with pytest.raises(ValueError, match="exclude_joint"):
        marginal_permute(2, make_rng(0), modalities=MODS[:2], exclude_joint=True)


def sequential_samples(directory: Path) -> dict[str, dict]:
    """Every sample of a split read front to back with tarfile (no index offsets involved)."""
    samples: dict[str, dict] = {}
    for shard in sorted(directory.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                key, name, _ = member.name.rsplit(".", 2)
                samples.setdefault(key, {})[name] = decode(tar.extractfile(member).read(), TOY_FEATURES[name])
    return samples


def test_negative_dataset_random_access_equals_sequential_read(tmp_path):
    write_toy(tmp_path / "toy", n=40, max_samples=7)
    shards = SplitShards.open(tmp_path / "toy")
    fields = ("image", "feat_audio", "text")
    tuples = negative_dataset(shards, make_rng(0, "negative_dataset", 0), modalities=fields)
    assert tuples.idx.shape == (40, 1, 3)
    truth, keys = sequential_samples(tmp_path / "toy"), shards.index["key"]
    reader = pickle.loads(pickle.dumps(NegativeReader(tmp_path / "toy", tuples)))
    for row in range(40):
        sample = reader.read(row)
        for m, name in enumerate(fields):
            expected = truth[keys[tuples.idx[row, 0, m]]][name]
            assert np.array_equal(sample[name], expected) if name != "text" else sample[name] == expected
    batch = reader.read_batch([3, 1, 4])
    lengths = [len(truth[keys[tuples.idx[r, 0, 1]]]["feat_audio"]) for r in (3, 1, 4)]
    assert batch["image"].shape == (3, 8, 8) and batch["feat_audio_lengths"].tolist() == lengths
    reader.close()


def test_negative_read_batch_equals_collated_rows(tmp_path):
    """The batched read (one MemberReader.read_batch per modality) gives the per-row samples, collated."""
    write_toy(tmp_path / "toy", n=40, max_samples=7)
    fields = ("image", "feat_audio", "text")
    tuples = marginal_permute(40, make_rng(3), modalities=fields, num_negatives=2)  # over index rows
    reader = NegativeReader(tmp_path / "toy", tuples)
    for rows, negative in (([3, 1, 4, 1, 39], 0), (list(range(40)), 1), ([7], 1)):
        batch = reader.read_batch(rows, negative)
        expected = collate([reader.read(r, negative) for r in rows], reader.shards.features, fields)
        assert list(batch) == list(expected)
        for key, value in expected.items():
            assert torch.equal(batch[key], value) if isinstance(value, torch.Tensor) else batch[key] == value, key
    reader.close()


# ---- modality dropout --------------------------------------------------------------------------------------------

def test_dropout_mask_rules():
    assert modality_dropout(50, make_rng(0), modalities=MODS, p=0.0).all()
    mask = modality_dropout(6000, make_rng(0), modalities=MODS, p=1.0, scope="row")
    assert mask.any(axis=1).all() and (~mask).any(axis=1).all()
    _, counts = np.unique(mask, axis=0, return_counts=True)
    assert len(counts) == 6 and chi_square(counts) < 20.5  # 2^3 - 2 proper non-empty subsets
    rows = modality_dropout(4000, make_rng(1), modalities=MODS, p=0.3, scope="row")
    assert abs((~rows).any(axis=1).mean() - 0.3) < 0.03
    batches = np.array([(~modality_dropout(8, make_rng(2, b), modalities=MODS, p=0.6)).any(axis=1)
                        for b in range(2000)])
    assert (batches.all(axis=1) | ~batches.any(axis=1)).all()  # batch scope: all rows or none
    assert abs(batches[:, 0].mean() - 0.6) < 0.04
    with pytest.raises(ValueError, match=">= 2 modalities"):
        modality_dropout(4, make_rng(0), modalities=MODS[:1])


def test_dropout_shared_across_negatives_and_batch():
    tuples = tuple_disturb(12, make_rng(0), modalities=MODS, num_negatives=6, ratios=[1, 1, 1, 1])
    before = tuples.idx.copy()
    mask = modality_dropout(12, make_rng(1), modalities=MODS, p=1.0)
    dropped = drop_tuples(tuples, mask)
    assert np.array_equal(tuples.idx, before)
    assert np.array_equal(dropped.idx == DROPPED, np.broadcast_to(~mask[:, None, :], dropped.idx.shape))
    values = {"image": torch.randn(12, 4), "audio_spec": torch.randn(12, 2, 2), "text": [f"t{i}" for i in range(12)]}
    batch = {**values, "label": torch.arange(12), "__key__": [str(i) for i in range(12)]}
    out = drop_batch(batch, mask, MODS)
    assert out["label"] is batch["label"] and out["__key__"] is batch["__key__"]
    assert batch["image"] is values["image"] and out["image"] is not values["image"]
    for m, name in enumerate(MODS):
        assert out[f"{name}_dropped"].tolist() == (~mask[:, m]).tolist()
    assert (out["image"][~torch.from_numpy(mask[:, 0])] == 0).all()
    neg = gather(values, dropped)
    assert np.array_equal(neg["image_dropped"].numpy(), np.broadcast_to(~mask[:, None, 0], (12, 6)))


# ---- label fractions -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    np.repeat(np.arange(7), [300, 120, 40, 20, 9, 5, 6]),
    np.round(make_rng(3).uniform(-3, 3, 700), 1),
])
def test_label_fraction_nested_stratified_exact(labels):
    index = {"label": labels.copy()}
    subsets = label_fraction(index, make_rng(0), fractions=(0.05, 0.1, 0.2))
    assert np.array_equal(index["label"], labels)
    n, group = len(labels), np.floor(np.asarray(labels) + 0.5).astype(int)
    assert [len(s) for s in subsets.values()] == [round(f * n + 1e-9) for f in (0.05, 0.1, 0.2)]
    assert set(subsets[0.05]) <= set(subsets[0.1]) <= set(subsets[0.2])
    for f, rows in subsets.items():
        for c in np.unique(group):
            share = f * (group == c).sum()
            assert abs((group[rows] == c).sum() - max(share, 1)) <= 1.5, (f, c)
    again = label_fraction(labels, make_rng(0), fractions=(0.1,))
    assert np.array_equal(again[0.1], subsets[0.1])
    assert not np.array_equal(label_fraction(labels, make_rng(1), fractions=(0.1,))[0.1], subsets[0.1])


def test_label_fraction_multilabel():
    rng = make_rng(4)
    hot = rng.random((800, 6)) < np.array([0.5, 0.3, 0.2, 0.05, 0.01, 0.0])
    as_ids = np.empty(800, dtype=object)
    as_ids[:] = [np.flatnonzero(r) for r in hot]
    for labels in (hot, as_ids, [r.astype(np.float32) for r in hot]):
        subsets = label_fraction(labels, make_rng(0))
        assert set(subsets[0.05]) <= set(subsets[0.1]) <= set(subsets[0.2])
        for f, rows in subsets.items():
            assert len(rows) == round(f * 800)
            for c in range(5):
                assert abs(hot[rows, c].sum() - f * hot[:, c].sum()) <= max(3, 0.25 * f * hot[:, c].sum())
                assert hot[rows, c].sum() >= 1  # rare genres kept
        assert np.array_equal(subsets[0.1], label_fraction(hot, make_rng(0))[0.1])


# ---- pairs, gather, loss: vectorised against naive loops -------------------------------------------------------

@pytest.mark.parametrize("labels", [make_rng(0).integers(0, 4, 15), make_rng(1).random((15, 5)) < 0.3])
def test_pairs_match_loop(labels):
    def shares(i, j):
        return bool(labels[i] == labels[j]) if labels.ndim == 1 else bool((labels[i] & labels[j]).any())
    same = [(i, j) for i in range(15) for j in range(15) if i != j and shares(i, j)]
    diff = [(i, j) for i in range(15) for j in range(15) if i != j and not shares(i, j)]
    assert list(zip(*map(np.ndarray.tolist, same_label_pairs(labels)))) == same
    assert list(zip(*map(np.ndarray.tolist, different_label_pairs(torch.as_tensor(labels))))) == diff


def test_hard_negatives_match_loop_with_injected_similarity():
    emb, labels = torch.randn(20, 6, generator=torch.Generator().manual_seed(0)), np.arange(20) % 4
    labels[:8] = 0  # class 0 has 10 members: only 10 different-label items for those rows
    def negative_distance(a, b):
        return -torch.cdist(a, b)
    out = hard_negatives(emb, labels, 12, similarity=negative_distance)
    for b in range(20):
        others = [j for j in range(20) if labels[j] != labels[b]]
        ranked = sorted(others, key=lambda j: float(torch.dist(emb[b], emb[j])))[:12]
        assert out[b].tolist() == ranked + [DROPPED] * (12 - len(ranked))


def test_gather_matches_loop_and_keeps_input():
    tuples = tuple_disturb(9, make_rng(0), modalities=MODS, num_negatives=5, ratios=[1, 1, 1, 1])
    tuples = drop_tuples(tuples, modality_dropout(9, make_rng(1), modalities=MODS, p=1.0))
    values = {"image": torch.randn(9, 3), "audio_spec": np.arange(9 * 4.0).reshape(9, 2, 2),
              "text": [f"t{i}" for i in range(9)], "label": torch.arange(9)}
    before = copy.deepcopy(values)
    out = gather(values, tuples, placeholder=-5.0)
    assert "label" not in out and out["image"].shape == (9, 5, 3) and out["audio_spec"].shape == (9, 5, 2, 2)
    for b, j in itertools.product(range(9), range(5)):
        for m, name in enumerate(MODS):
            r = tuples.idx[b, j, m]
            want = values[name][r] if r != DROPPED else ("" if name == "text" else -5.0)
            got = out[name][b][j]
            assert got == want if name == "text" else np.allclose(np.asarray(got), np.asarray(want))
    assert all(np.array_equal(np.asarray(values[k]), np.asarray(before[k])) for k in values)



@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint8, torch.float16, torch.int64])
def test_gather_fills_dropped_entries_for_every_dtype(dtype):
    """uint16 (depth maps) has no masked_fill kernel in torch: gather must still fill its dropped entries."""
    mods = ("depth", "image")
    tuples = drop_tuples(tuple_disturb(6, make_rng(0), modalities=mods, num_negatives=3, ratios=[1, 1, 1]),
                         modality_dropout(6, make_rng(1), modalities=mods, p=1.0))
    depth = torch.arange(6 * 4).reshape(6, 2, 2).to(dtype)
    out = gather({"depth": depth, "image": torch.zeros(6)}, tuples, placeholder=7.0)["depth"]
    rows = torch.from_numpy(tuples.idx[:, :, 0])
    want = torch.where((rows == DROPPED).view(6, 3, 1, 1), torch.full_like(out, 7), depth[rows.clamp(min=0)])
    assert out.dtype == dtype and (rows == DROPPED).any() and torch.equal(out, want)

@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_tuple_infonce_matches_loop(similarity):
    g = torch.Generator().manual_seed(0)
    anchor, positive, negatives = (torch.randn(*shape, generator=g, dtype=torch.float64)
                                   for shape in [(6, 4), (6, 4), (6, 5, 4)])
    mask = torch.rand(6, 5, generator=g) > 0.3
    anchor.requires_grad_(True)
    got = tuple_infonce(anchor, positive, negatives, temperature=0.2, similarity=similarity, negative_mask=mask)
    def sim(a, b):
        return float(a @ b / (a.norm() * b.norm())) if similarity == "cosine" else float(a @ b)
    for b in range(6):
        a = anchor[b].detach()
        pos = math.exp(sim(a, positive[b]) / 0.2)
        neg = sum(math.exp(sim(a, negatives[b, j]) / 0.2) for j in range(5) if mask[b, j])
        assert got[b].item() == pytest.approx(-math.log(pos / (pos + neg)), rel=1e-9)
    got.sum().backward()
    assert anchor.grad is not None and torch.isfinite(anchor.grad).all()


def test_readme_snippet_runs():
    text = (ROOT / "README.md").read_text().split("## Samplers on plain tensors", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["neg"]["image"].shape == (32, 8, 64) and torch.isfinite(scope["loss"])
