"""methods/tupleinfonce.py, tuple_contrast.py and tuple_search.py (TupleInfoNCE; ../shared/methods.md 5.4 T1, T3,
T4): loss parity, gathered negatives, the discrimination reward, REINFORCE's sign and the method's schedule."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods import late_fusion, loop, tupleinfonce
from methods.tuple_contrast import (DisturbSampler, contrastive_loss, disturbed_modalities, gathered_parts,
                                    placeholder_parts, positive_view, project, slot_log_weights)
from methods.tuple_search import GaussianPolicy, cross_modal_accuracy, discrimination_accuracy, pool_batches
from mmdata.rng import make_rng
from mmdata.samplers import drop_tuples, gather, modality_dropout, tuple_disturb, tuple_infonce
from mmdata.types import DROPPED, Field, Tuples
from tests.test_methods import fake_batch

SCHEMA = {"feat_a": Field("float32", (6,), "npy"), "feat_b": Field("float32", (4, 3), "npy"),
          "feat_c": Field("float32", (5,), "npy"), "label": Field("float32", (), "npy")}
FIELDS = ["feat_a", "feat_b", "feat_c"]
SMALL = {"dim": 8, "hidden": 16, "proj_dim": 8}


def _model(seed=0, **options):
    torch.manual_seed(seed)
    return tupleinfonce.build_model(SCHEMA, fields=FIELDS, **{**SMALL, **options})


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


# --- T1: loss parity ---


def test_alpha0_only_is_in_batch_infonce():
    q, p = _unit(8, 5, seed=1), _unit(8, 5, seed=2)
    ours = contrastive_loss(q, p, temperature=0.1)
    reference = F.cross_entropy(q.float() @ p.float().T / 0.1, torch.arange(8))  # info-nce-pytorch, no negatives
    others = torch.stack([p[[j for j in range(8) if j != i]] for i in range(8)])  # paired: the other positives
    paired = tuple_infonce(q, p, others, temperature=0.1).mean()
    assert float(ours) == pytest.approx(float(reference), abs=1e-6)
    assert float(ours) == pytest.approx(float(paired), abs=1e-6)


def test_disturbed_keys_reproduce_the_official_b_by_4b_cross_entropy():
    b, t = 6, 0.07
    q, p, *blocks = (_unit(b, 7, seed=s) for s in range(5))  # positives and 3 disturbed blocks of B keys
    official = F.cross_entropy(q.float() @ torch.cat([p, *blocks]).float().T / t, torch.arange(b))
    negatives = torch.cat(blocks).expand(b, 3 * b, 7)  # every anchor sees all 3B disturbed keys
    ones = torch.zeros(3 * b)  # log 1
    for log_weights in (None, ones):
        ours = contrastive_loss(q, p, negatives, log_weights, temperature=t)
        assert abs(float(ours) - float(official)) < 1e-6


@pytest.mark.parametrize("w", [1, 2, 4])
def test_log_weights_equal_duplicated_blocks(w):
    b, t = 5, 0.07
    q, p, n1, n2 = (_unit(b, 6, seed=10 + s) for s in range(4))
    weighted = contrastive_loss(q, p, torch.cat([n1, n2]).expand(b, 2 * b, 6),
                                torch.cat([torch.full((b,), math.log(w)), torch.zeros(b)]), temperature=t)
    copies = torch.cat([n1] * w + [n2]).float()
    duplicated = F.cross_entropy(q.float() @ torch.cat([p.float(), copies]).T / t, torch.arange(b))
    assert abs(float(weighted) - float(duplicated)) < 1e-6


def test_slot_weights_follow_the_disturbed_modality_and_drop_copies_of_the_positive():
    # anchor 0 and anchor 1; slots disturb: feat_a only, feat_c only, every modality, none
    idx = np.array([[[1, 0, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]],
                    [[0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1]]])
    tuples = Tuples(idx, tuple(FIELDS))
    log_w = torch.tensor([math.log(2.0), math.log(3.0), math.log(5.0)])
    expected = torch.tensor([math.log(2.0), math.log(5.0), 0.0, -math.inf])  # w_a, w_c, 1 (full), removed
    out = slot_log_weights(tuples, log_w)
    assert torch.equal(out[0], expected) and torch.equal(out[1], expected)
    dropped = drop_tuples(tuples, np.array([[False, True, True], [True, True, True]]))
    assert slot_log_weights(dropped, log_w)[0, 0] == -math.inf  # its only disturbed modality is missing


def test_sampled_slots_stand_for_the_whole_population_and_zero_weights_remove_a_type():
    tuples = DisturbSampler(tuple(FIELDS), 6)(5, make_rng(3))  # 2 slots per modality out of 4 partners
    types = disturbed_modalities(tuples).argmax(axis=-1)  # [B, K]
    log_w = torch.tensor([0.0, math.log(3.0), -math.inf])  # feat_c weighs 0
    out = slot_log_weights(tuples, log_w, population=4)
    expected = torch.tensor([0.0, math.log(3.0), -math.inf])[types] + math.log(4 / 2)
    assert torch.allclose(out, expected.float()) and not torch.isnan(out).any()
    assert torch.allclose(slot_log_weights(tuples, log_w, population=2), log_w[types].float())  # c = population
    shares = tuple_disturb(9, make_rng(4), modalities=FIELDS, num_negatives=8, ratios=[0, 1, 1, 2])  # 2, 2, 4 slots
    assert torch.allclose(slot_log_weights(shares, torch.zeros(3), population=8), torch.full((9, 8), math.log(3.0)))


# --- the negatives ---


@pytest.mark.parametrize("n, total", [(2, None), (9, None), (32, 12), (3, 30)])
def test_default_tuples_disturb_one_modality_never_with_the_anchor_itself(n, total):
    tuples = DisturbSampler(tuple(FIELDS), total)(n, make_rng(0, "t", n))
    disturbed = disturbed_modalities(tuples)
    assert (disturbed.sum(axis=-1) == 1).all()  # k = 1, no full negatives
    rows = np.broadcast_to(np.arange(n)[:, None, None], tuples.idx.shape)
    assert (tuples.idx[disturbed] != rows[disturbed]).all() and (tuples.idx[~disturbed] == rows[~disturbed]).all()
    per_type = disturbed.sum(axis=1)  # [n, M]: equal slots per modality, at most n - 1 each
    expected = n - 1 if total is None else min(total, 3 * (n - 1)) // 3
    assert (per_type == expected).all()


def test_negative_embeddings_are_fused_gathered_features():
    model = _model().eval()
    batch = fake_batch(SCHEMA, 7, seed=3)
    tuples = DisturbSampler(tuple(FIELDS), 6)(7, make_rng(1))
    tuples = drop_tuples(tuples, modality_dropout(7, make_rng(2), modalities=FIELDS, p=1.0))
    assert (tuples.idx == DROPPED).any()
    with torch.no_grad():
        ours = project(model, gathered_parts(model.encode(batch), tuples, placeholder_parts(model, batch)))
        inputs = gather({n: batch[n] for n in FIELDS}, tuples)  # dropped inputs become zeros: the placeholder
        flat = {"__key__": [str(i) for i in range(7 * 6)], **{n: inputs[n].flatten(0, 1) for n in FIELDS}}
        encoded = project(model, model.encode(flat))
    assert torch.allclose(ours, encoded, atol=1e-6)


def test_positive_view_is_keyed_by_seed_epoch_index_and_key():
    model = _model(strength=0.5)
    batch = fake_batch(SCHEMA, 4, seed=0)
    first, again = positive_view(model, batch, (0, 1, 2)), positive_view(model, batch, (0, 1, 2))
    other = positive_view(model, batch, (0, 2, 2))
    assert all(torch.equal(first[n], again[n]) for n in FIELDS)
    assert not torch.equal(first["feat_a"], batch["feat_a"]) and not torch.equal(first["feat_a"], other["feat_a"])
    assert positive_view(_model(strength=0.0), batch, (0, 1, 2)) is batch


# --- T4 and the reward ---


def test_discrimination_accuracy_identity_is_one_and_shuffled_is_chance():
    n = 40
    keys = _unit(2, n, 64, seed=4)
    assert torch.equal(discrimination_accuracy(keys, keys), torch.ones(2))
    g = torch.Generator().manual_seed(5)
    shuffled = [float(discrimination_accuracy(keys, keys[:, torch.randperm(n, generator=g)]).mean())
                for _ in range(300)]
    assert np.mean(shuffled) == pytest.approx(1 / n, abs=0.3 / n)  # fixed points of a random permutation


class _Identity(nn.Module):
    def forward(self, x, mask=None):
        return x


class _Sum(nn.Module):
    def forward(self, parts):
        return sum(parts.values())


def _block_identity_model(n):
    """Two fields whose encoders pass one-hot item ids through; the fusion sums; no projection."""
    schema = {"feat_a": Field("float32", (n,), "npy"), "feat_b": Field("float32", (n,), "npy"),
              "label": Field("float32", (), "npy")}
    model = tupleinfonce.build_model(schema, fields=["feat_a", "feat_b"], dim=n, hidden=n, proj_dim=n, strength=0.0)
    model.base.encoders = nn.ModuleDict({"feat_a": _Identity(), "feat_b": _Identity()})
    model.base.fusion, model.projection = _Sum(), nn.Identity()
    return model


def test_cross_modal_accuracy_block_identity_is_one_and_shuffled_about_chance():
    n = 30
    model = _block_identity_model(n)
    eye = torch.eye(n)
    batches = [{"__key__": [f"k{i}" for i in range(s, s + 10)], "feat_a": eye[s:s + 10], "feat_b": eye[s:s + 10]}
               for s in range(0, n, 10)]
    pool = pool_batches(batches, 25)
    result = cross_modal_accuracy(model, pool)
    assert result["candidates"] == 25 and result["chance"] == pytest.approx(1 / 25)
    assert result["accuracy"] == {"feat_a": 1.0, "feat_b": 1.0} and result["reward"] == 2.0
    perm = torch.from_numpy(make_rng(0, "shuffle").permutation(n))
    shuffled = [{**b, "feat_b": eye[perm][i * 10:(i + 1) * 10]} for i, b in enumerate(batches)]
    fixed = float((perm == torch.arange(n)).float().mean())
    assert cross_modal_accuracy(model, pool_batches(shuffled, n))["accuracy"]["feat_a"] == pytest.approx(fixed)


# --- T3: REINFORCE ---


def test_reinforce_moves_the_mean_toward_higher_rewards_and_not_on_equal_ones():
    for sign in (1.0, -1.0):
        policy = GaussianPolicy([0.0, 0.0, 0.0], 0.5, 0.25)
        actions = policy.sample(5, torch.Generator().manual_seed(0))
        policy.update(actions, sign * actions[:, 0])
        assert sign * float(policy.mean[0]) > 0
    policy = GaussianPolicy([0.3, -0.2], 0.5, 0.25)
    policy.update(policy.sample(5, torch.Generator().manual_seed(1)), [0.7] * 5)
    assert policy.mean.tolist() == [0.3, -0.2]


# --- the method ---


def test_fit_takes_the_loop_arguments():
    assert list(inspect.signature(tupleinfonce.fit).parameters) == list(inspect.signature(loop.fit).parameters)[1:]


def _batches(count=3, size=8):
    return [fake_batch(SCHEMA, size, seed=s) for s in range(count)]


def test_objective_none_is_plain_late_fusion_fine_tuning():
    model = _model(objective="none")
    torch.manual_seed(0)  # the base is built first from the same seed, so its initial weights match
    plain = late_fusion.build_model(SCHEMA, fields=FIELDS, dim=8, hidden=16)
    batches = _batches()
    history = loop.fit(tupleinfonce, model, batches, epochs=2, lr=1e-2, device="cpu", seed=4, log=lambda line: None)
    loop.fit(late_fusion, plain, batches, epochs=2, lr=1e-2, device="cpu", seed=4, log=lambda line: None)
    assert history["pretrain"] is None and history["search"] is None
    for (name, ours), theirs in zip(model.base.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_pretraining_then_a_linear_probe_trains_only_the_head():
    model = _model(pretrain_epochs=1, probe="linear", candidates=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = tupleinfonce.fit(model, _batches(), epochs=1, lr=1e-2, device="cpu", seed=0, log=lambda line: None)
    after = model.state_dict()
    assert not torch.equal(before["base.encoders.feat_a.net.0.weight"], after["base.encoders.feat_a.net.0.weight"])
    pretrained = {k: v.clone() for k, v in after.items()}
    tupleinfonce.fit(_frozen_copy(model), _batches(), epochs=1, lr=1e-2, device="cpu", seed=0, log=lambda line: None)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, pretrained[k])}
    assert changed == {"base.head.weight", "base.head.bias"}
    assert history["pretrain"]["train_loss"][0] > 0 and history["discrimination"]["candidates"] == 10


def _frozen_copy(model):
    model.objective = "none"  # fine-tuning only, on the pretrained weights
    return model


def test_the_search_alternates_targets_and_keeps_the_hyperparameters_in_range():
    model = _model(search=True, search_epochs=2, clones=2, pretrain_epochs=0, candidates=8)
    history = tupleinfonce.fit(model, _batches(2), epochs=1, lr=1e-3, device="cpu", seed=0, log=lambda line: None)
    record = history["search"]
    assert [e["target"] for e in record["epochs"]] == ["strength", "ratios"]
    assert record["chance"] == pytest.approx(1 / 8) and 0 <= history["strength"] <= 1
    assert all(len(e["rewards"]) == 2 for e in record["epochs"]) and set(history["ratios"]) == set(FIELDS)
    means = dict(zip(FIELDS, np.exp(record["epochs"][1]["mean"])))  # the ratios policy's mean after its update
    assert model.ratios == pytest.approx(means) and history["ratios"] == model.ratios
    reloaded = _model(seed=9, search=True)
    reloaded.load_state_dict(model.state_dict())  # a checkpoint keeps what the search found
    assert tupleinfonce.describe(reloaded) == tupleinfonce.describe(model)
    assert tupleinfonce.describe(reloaded)["strength"] == pytest.approx(record["epochs"][0]["mean"][0])


def test_pretrain_step_is_reproducible_and_the_loss_is_finite_under_dropout():
    model = _model(modality_dropout=1.0)
    batch = fake_batch(SCHEMA, 6, seed=1)
    torch.manual_seed(0)
    first = tupleinfonce.pretrain_step(model.eval(), batch, where=(0, 0, 0))
    second = tupleinfonce.pretrain_step(model, batch, where=(0, 0, 0))
    assert torch.equal(first["loss"], second["loss"]) and torch.isfinite(first["loss"])
    assert float(first["negatives"]) < 3 * 5  # some disturbed modalities were dropped with the positive's


@pytest.mark.parametrize("options", [{"objective": "simclr"}, {"probe": "mlp"}, {"search": "alpha"},
                                     {"ratios": {"feat_a": 1.0}}, {"ratios": [1.0, -1.0, 1.0]},
                                     {"search": True, "objective": "infonce"}, {"temperature": 0.0},
                                     {"strength": 1.5}, {"clones": 0}])
def test_bad_options_are_refused(options):
    assert set(tupleinfonce.SEARCHES) == set(tupleinfonce.tuple_contrast.SEARCH_OPTIONS)  # one table of values
    with pytest.raises(ValueError):
        _model(**options)


def test_a_unimodal_run_pretrains_without_dropout():
    model = tupleinfonce.build_model(SCHEMA, fields=["feat_a"], **SMALL)  # dropout 0.6 cannot apply: no error
    out = tupleinfonce.pretrain_step(model, fake_batch(SCHEMA, 5, seed=2), where=(0, 0, 1))
    assert torch.isfinite(out["loss"]) and float(out["negatives"]) == 4  # every other row, once


# --- the controlled checks (methods/fidelity/tupleinfonce.py), on a tiny budget ---


def test_reinforce_sign_check_passes_and_weak_modality_check_keeps_its_keys():
    from methods.fidelity.tupleinfonce import tuple_reinforce_sign, tuple_weak_modality

    sign = tuple_reinforce_sign(trials=3)
    assert all(sign["passed"].values()) and sign["max_abs_delta_equal"] == 0.0
    weak = tuple_weak_modality(seeds=1, steps=3)
    assert set(weak["r2_weak"]) == {"tupleinfonce", "infonce"} and len(weak["r2_weak"]["infonce"]) == 1
    assert {"measured", "paper", "passed"} <= set(weak) and weak["chance"] == pytest.approx(1 / 256)


def test_placeholder_pass_leaves_batch_norm_running_statistics_alone():
    """The all-zero placeholder batch is normalised by its own statistics but must not enter the running
    averages that evaluation normalises real inputs with."""
    from methods.blocks import frozen_running_stats
    from methods.tuple_contrast import placeholder_parts

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.BatchNorm1d(6, momentum=None)).train()
    x = torch.randn(8, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with frozen_running_stats(net):
        inside = net(x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net[1].momentum == 0.1 and net[2].momentum is None  # restored
    assert torch.allclose(inside, net(x))  # the same outputs as a normal training-mode pass
    assert not torch.equal(before["1.running_mean"], net.state_dict()["1.running_mean"])  # which does update

    schema = {"image": Field("uint8", (8, 8, 3), "jpg"), "feat_b": Field("float32", (4,), "npy"),
              "label": Field("int64", (), "cls", classes=("a", "b"))}
    model = tupleinfonce.build_model(schema, fields=["image", "feat_b"], dim=8, hidden=8, proj_dim=4).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}
    assert stats, "the image encoder must have batch norm layers for this test to mean anything"
    placeholder_parts(model, fake_batch(schema, 6, seed=1))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
