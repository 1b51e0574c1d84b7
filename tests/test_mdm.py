"""methods/losses.py dependency bounds and gradient penalty; methods/mdm.py (MDM); the mdm_gaussians check."""
from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch

from methods import late_fusion, loop, mdm
from methods.fidelity.mdm import joint_and_negatives as check_negatives
from methods.fidelity.mdm import StackedCritics, gaussian_triples, mdm_gaussians, total_correlation
from methods.losses import DEPENDENCY_BOUNDS, MovingAverage, dependency_bound, gradient_penalty, log_mean_exp
from mmdata.samplers import marginal_permute
from mmdata.types import Field, Tuples
from pipelines.fidelity import plain
from tests.test_methods import fake_batch

#: Three small vector modalities and a regression label (MOSI-shaped, cheap).
VECTORS = {"feat_text": Field("float32", (6,), "npy"), "feat_audio": Field("float32", (4,), "npy"),
           "feat_vision": Field("float32", (5,), "npy"), "label": Field("float32", (), "json")}
FIELDS = ["feat_text", "feat_audio", "feat_vision"]
SMALL = {"dim": 8, "hidden": 16, "critic_hidden": 16}


def _model(seed=0, **options):
    torch.manual_seed(seed)
    return mdm.build_model(VECTORS, fields=FIELDS, **{**SMALL, **options})


def _batches(count=3, size=8, seed=0):
    return [fake_batch(VECTORS, size, seed + i) for i in range(count)]


# --- bounds --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [(0.0, 0.0), (1.0, 1.0), (2.5, -1.0), (-3.0, 4.0)])
def test_bounds_on_constant_critics(a, b):
    joint, marginal = torch.full((7,), a, dtype=torch.float64), torch.full((5,), b, dtype=torch.float64)
    assert float(dependency_bound(joint, marginal, "dv")) == pytest.approx(a - b, abs=1e-12)
    assert float(dependency_bound(joint, marginal, "wasserstein")) == pytest.approx(a - b, abs=1e-12)
    assert float(dependency_bound(joint, marginal, "wasserstein_kr")) == pytest.approx(a - b, abs=1e-12)
    assert float(dependency_bound(joint, marginal, "nwj")) == pytest.approx(a - math.exp(b - 1), abs=1e-12)


def test_bounds_on_known_scores_and_stacked_rows():
    g = torch.Generator().manual_seed(0)
    joint, marginal = torch.randn(3, 10, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g,
                                                                                       dtype=torch.float64)
    dv = dependency_bound(joint, marginal, "dv")
    assert dv.shape == (3,)
    for r in range(3):
        expected = joint[r].mean() - math.log(float(marginal[r].exp().mean()))
        assert float(dv[r]) == pytest.approx(float(expected), abs=1e-12)
        assert float(dependency_bound(joint[r], marginal[r], "nwj")) == pytest.approx(
            float(joint[r].mean() - (marginal[r] - 1).exp().mean()), abs=1e-12)
    assert float(log_mean_exp(torch.tensor([1000.0, 1000.0]))) == pytest.approx(1000.0)  # no overflow


def test_dv_is_at_least_nwj_with_equality_where_mean_exp_is_e():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        joint, marginal = torch.randn(16, generator=g) * 3, torch.randn(16, generator=g) * 3
        assert float(dependency_bound(joint, marginal, "dv")) >= float(dependency_bound(joint, marginal, "nwj")) - 1e-6
    ones = torch.ones(4, dtype=torch.float64)  # log x <= x / e, equal at x = e: mean(e^{T-}) = e
    assert float(dependency_bound(ones, ones, "dv")) == pytest.approx(float(dependency_bound(ones, ones, "nwj")))


def test_bound_errors_name_the_choices():
    with pytest.raises(ValueError, match="known: dv, nwj"):
        dependency_bound(torch.zeros(2), torch.zeros(2), "mine")
    with pytest.raises(ValueError, match="dv and wasserstein"):
        dependency_bound(torch.zeros(2), torch.zeros(2), "nwj", ema=torch.tensor(1.0))


def test_mine_moving_average_and_its_gradient():
    average = MovingAverage(0.01)
    first = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    assert float(average.update(first)) == pytest.approx(float(first.exp().mean()))  # starts from batch 1
    joint = torch.tensor([0.5, -0.2, 1.0, 0.3], dtype=torch.float64, requires_grad=True)
    marginal = torch.tensor([0.1, 0.7, -1.5], dtype=torch.float64, requires_grad=True)
    ema = average.update(marginal)
    assert float(ema) == pytest.approx(0.01 * float(marginal.exp().mean()) + 0.99 * float(first.exp().mean()))
    value = dependency_bound(joint, marginal, "dv", ema=ema)
    assert float(value) == pytest.approx(float(dependency_bound(joint, marginal, "dv")))  # same forward value
    value.backward()
    assert torch.allclose(joint.grad, torch.full_like(joint, 1 / 4))
    expected = -marginal.detach().exp() / (float(ema) + 1e-6) / 3  # methods.md 7.4
    assert torch.allclose(marginal.grad, expected, atol=1e-12)
    plain = marginal.detach().requires_grad_(True)
    dependency_bound(joint.detach(), plain, "dv").backward()
    assert not torch.allclose(plain.grad, expected)  # the EMA changes the gradient, not only the name


def test_gradient_penalty_zero_for_unit_norm_linear_and_known_otherwise():
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(6, 1).double()
    with torch.no_grad():
        linear.weight /= linear.weight.norm()
    critic = lambda x: linear(x).squeeze(-1)  # noqa: E731
    x_p, x_m = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randn(32, 6, generator=g,
                                                                                 dtype=torch.float64)
    assert float(gradient_penalty(critic, x_p, x_m, generator=g)) == pytest.approx(0.0, abs=1e-20)
    with torch.no_grad():
        linear.weight *= 3.0  # gradient norm 3 everywhere: 10 * (3 - 1)^2
    penalty = gradient_penalty(critic, x_p, x_m, generator=g)
    assert float(penalty) == pytest.approx(40.0)
    penalty.backward()
    assert linear.weight.grad is not None and float(linear.weight.grad.abs().sum()) > 0


def test_gradient_penalty_is_seeded_and_per_row():
    critic = mdm.StatisticNetwork(4, 8)
    x_p, x_m = torch.randn(2, 16, 4), torch.randn(2, 16, 4)
    first = gradient_penalty(critic, x_p, x_m, generator=torch.Generator().manual_seed(3))
    again = gradient_penalty(critic, x_p, x_m, generator=torch.Generator().manual_seed(3))
    assert first.shape == (2,) and torch.equal(first, again)
    row = gradient_penalty(critic, x_p[1], x_m[1], generator=torch.Generator().manual_seed(3))
    assert row.shape == () and float(row) > 0


def test_spectral_norm_critic_is_at_most_1_lipschitz():
    torch.manual_seed(0)
    critic = mdm.StatisticNetwork(10, 32, spectral_norm=True)
    x = torch.randn(64, 10) * 3
    for _ in range(30):  # power iterations run in train mode
        critic(x)
    critic.eval()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    assert float(grad.norm(dim=-1).max()) <= 1.0 + 1e-3


# --- the method ----------------------------------------------------------------------------------------------

def test_fit_takes_the_loop_arguments():
    assert list(inspect.signature(mdm.fit).parameters) == list(inspect.signature(loop.fit).parameters)[1:]
    assert mdm.BOUNDS == (*DEPENDENCY_BOUNDS, "none")


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown bound"):
        _model(bound="kl")
    with pytest.raises(ValueError, match="'feat_text'"):
        mdm.build_model(VECTORS, fields=["feat_text"], **SMALL)
    assert mdm.build_model(VECTORS, fields=["feat_text"], bound="none", **SMALL).critic is None
    with pytest.raises(ValueError, match="mine_ema"):
        _model(bound="nwj", mine_ema=0.01)


def test_bound_none_trains_exactly_late_fusion():
    train, valid = _batches(3), _batches(2, seed=10)
    options = {"epochs": 2, "lr": 1e-2, "weight_decay": 1e-4, "seed": 5, "valid_batches": valid, "log": lambda s: 0}
    torch.manual_seed(0)
    base = late_fusion.build_model(VECTORS, fields=FIELDS, dim=8, hidden=16)
    expected = loop.fit(late_fusion, base, train, **options)
    model = _model(bound="none")
    got = loop.fit(mdm, model, train, **options)
    assert got["train_loss"] == expected["train_loss"] and got["valid_loss"] == expected["valid_loss"]
    assert got["best_epoch"] == expected["best_epoch"] and got["bound_kind"] == "none"
    for key, value in base.state_dict().items():
        assert torch.equal(model.base.state_dict()[key], value), key


def test_critic_steps_change_only_the_critic():
    model = _model(bound="wasserstein", unroll=3)
    batch = _batches(1)[0]
    parts = model.encode(batch)
    tuples = marginal_permute(8, np.random.default_rng(0), modalities=FIELDS)
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    critic_before = [p.detach().clone() for p in model.critic.parameters()]
    opt = torch.optim.Adam(model.critic.parameters(), lr=1e-2)
    mdm.critic_steps(model, *mdm.joint_and_negatives(parts, FIELDS, tuples), opt, torch.Generator(), None)
    assert all(torch.equal(model.base.state_dict()[k], v) for k, v in base_before.items())
    assert all(not torch.equal(p, q) for p, q in zip(model.critic.parameters(), critic_before))
    assert all(p.grad is None for p in model.base.parameters())


def test_model_step_reaches_the_encoders_through_joint_and_negatives_not_the_critic():
    model = _model(bound="dv", weight=1.0)
    batch = _batches(1)[0]
    tuples = marginal_permute(8, np.random.default_rng(0), modalities=FIELDS)
    out = mdm.training_step(model, batch, tuples)
    assert set(out) == {"loss", "pred", "task_loss", "bound"} and out["pred"].shape == (8,)
    assert float(out["loss"]) == pytest.approx(float(out["task_loss"] - out["bound"]), abs=1e-6)
    (-(out["loss"] - out["task_loss"])).backward()  # the bound's gradient alone
    assert all(p.grad is None for p in model.critic.parameters())  # frozen in the model step
    for name in FIELDS:
        grads = [p.grad for p in model.base.encoders[name].parameters()]
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), name
    parts = {n: v.detach().requires_grad_(True) for n, v in model.encode(batch).items()}
    _, negatives = mdm.joint_and_negatives(parts, FIELDS, tuples)
    negatives.sum().backward()  # the permuted path carries gradient to every field's representation
    assert all(float(parts[n].grad.abs().sum()) > 0 for n in FIELDS)


def test_fit_moves_the_encoders_with_the_bound_and_logs_it():
    train, valid = _batches(2), _batches(1, seed=10)
    states = {}
    for weight in (0.0, 1.0):
        model = _model(bound="nwj", weight=weight, unroll=2)
        hist = loop.fit(mdm, model, train, epochs=2, lr=1e-2, seed=0, valid_batches=valid, log=lambda s: 0)
        states[weight] = model.base.state_dict()
    assert hist["bound_kind"] == "nwj" and len(hist["bound"]) == 2 and len(hist["valid_bound"]) == 2
    assert all(np.isfinite(hist["bound"])) and {"epoch", "seconds", "samples_per_s", "device", "amp"} <= set(hist)
    assert any(not torch.equal(states[0.0][k], states[1.0][k]) for k in states[0.0] if k.startswith("encoders."))


def _recorded_tuples(monkeypatch, **options):
    seen, losses = [], mdm._losses

    def spy(model, batch, parts, tuples):
        if model.training:
            seen.append(tuples.idx.copy())
        return losses(model, batch, parts, tuples)

    monkeypatch.setattr(mdm, "_losses", spy)
    loop.fit(mdm, _model(unroll=1, **options), _batches(3), epochs=2, lr=1e-3, seed=0, log=lambda s: 0)
    return seen


def test_fixed_negatives_reuse_one_permutation(monkeypatch):
    fixed = _recorded_tuples(monkeypatch, fixed_negatives=True)
    monkeypatch.undo()
    fresh = _recorded_tuples(monkeypatch)
    assert len(fixed) == len(fresh) == 6
    assert all(np.array_equal(t, fixed[0]) for t in fixed)
    assert len({t.tobytes() for t in fresh}) == 6  # a fresh derangement per batch by default
    for t in fresh:
        assert (t[:, 0, :] != np.arange(8)[:, None]).all()  # derangements: never the anchor's own row


def test_amp_and_a_configured_sampler_run():
    sampler = lambda n, rng: marginal_permute(n, rng, modalities=FIELDS, num_negatives=2)  # noqa: E731
    hist = loop.fit(mdm, _model(bound="wasserstein", mine_ema=0.01, spectral_norm=True, unroll=1), _batches(2),
                    epochs=1, lr=1e-3, amp="bf16", sampler=sampler, log=lambda s: 0)
    assert hist["amp"] == "bfloat16" and np.isfinite(hist["train_loss"][0]) and np.isfinite(hist["bound"][0])
    bad = Tuples(np.zeros((8, 1, 1), dtype=np.int64), ("feat_text",))
    with pytest.raises(ValueError, match="feat_audio"):
        mdm.training_step(_model(), _batches(1)[0], bad)


# --- the controlled check ------------------------------------------------------------------------------------

def test_truth_and_data_follow_the_formula():
    assert total_correlation(0.3, 5) == pytest.approx(0.608, abs=1e-3)
    assert total_correlation(0.5, 5) == pytest.approx(1.733, abs=1e-3)
    assert total_correlation(0.7, 5) == pytest.approx(3.83, abs=1e-2)
    x = gaussian_triples(torch.tensor([0.0, 0.6]), 20000, 2, torch.Generator().manual_seed(0))
    corr = np.corrcoef(x[1, :, :, 0].T.numpy())
    assert np.allclose(corr[np.triu_indices(3, 1)], 0.6, atol=0.02) and abs(float(x[1].std()) - 1) < 0.02
    joint, negatives = check_negatives(x[:, :10], np.random.default_rng(0))
    assert joint.shape == negatives.shape == (2, 10, 6)
    assert torch.equal(negatives[:, :, :2].sort(dim=1).values, joint[:, :, :2].sort(dim=1).values)  # marginals


def test_stacked_critics_score_like_each_critic():
    critics = [mdm.StatisticNetwork(6, 8) for _ in range(3)]
    x = torch.randn(3, 5, 6)
    stacked = StackedCritics(critics)(x)
    assert torch.allclose(stacked, torch.stack([c(x[i]) for i, c in enumerate(critics)]), atol=1e-6)


def test_check_on_a_tiny_config():
    result = mdm_gaussians(rhos=(0.0, 0.5), steps=5, batch=32, eval_batches=2, eval_size=64,
                           bounds=("dv", "nwj", "wasserstein", "wasserstein_kr"), hidden=8, checkpoints=(2,))
    assert set(result["by_step"]) == {"2"} and set(result["by_step"]["2"]["dv"]) == {"0.0", "0.5"}
    assert set(result["truth"]) == {"0.0", "0.5"} and result["truth"]["0.0"] == 0.0
    assert set(result["estimates"]) == set(result["spread"]) == {"dv", "nwj", "wasserstein", "wasserstein_kr"}
    assert all(set(v) == {"0.0", "0.5"} for v in result["estimates"].values())
    assert all(isinstance(v, bool) for v in result["passed"].values()) and "claim" in result["paper"]
    assert "dv_strictly_increasing" in result["passed"] and "truth 0, 1.73" in result["measured"]
    again = mdm_gaussians(rhos=(0.0, 0.5), steps=5, batch=32, eval_batches=2, eval_size=64, hidden=8)
    # Seeded: the same figures on a rerun, and an evaluation checkpoint does not disturb training.
    assert again["estimates"]["dv"] == result["estimates"]["dv"] and again["by_step"] == {}
    assert json.loads(json.dumps(plain(result)))["per_batch"]["nwj"]["0.5"] == pytest.approx(
        result["per_batch"]["nwj"]["0.5"], rel=1e-5)  # what pipelines.fidelity writes
