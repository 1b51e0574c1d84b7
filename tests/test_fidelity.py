"""Controlled checks (methods/fidelity, pipelines/fidelity): the adjacency maths, stable result keys, the
vectorised trial trainer against a per-trial loop, the CLI's file, and seed_offset drawing fresh data.

Every check runs here at toy sizes through its options; the real sizes run in the ``fidelity`` DVC stage.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from methods import late_fusion, profusion
from methods.fidelity import CHECKS, check_options, run_check
from methods.fidelity import profusion as pf
from methods.fidelity import refnet as rf
from methods.fidelity.stacked import batch_order, predict_stacked, train_each, train_stacked, unstack
from mmdata.errors import ConfigError
from mmdata.rng import make_rng
from pipelines import fidelity

TINY = {
    "refnet_adjacency": {"m": 8, "d": 16, "ranks": [2, 4, 7], "seeds": 2, "adam_steps": 30},
    "refnet_unimodal": {"seeds": 1, "epochs": 1, "n_train": 128, "n_test": 64},
    "profusion_synthetic": {"trials": 1, "steps": 2},
    "profusion_zero_context": {"batch_size": 2},
    "tuple_weak_modality": {"seeds": 1, "steps": 3},
    "tuple_reinforce_sign": {"trials": 3},
    "mdm_gaussians": {"rhos": (0.0, 0.5), "steps": 3, "batch": 32, "eval_batches": 2, "eval_size": 64,
                      "checkpoints": ()},
    "cmvqvae_contradictory": {"steps": 50, "n_test": 40},
}
#: The keys scripts read (issue 12 point 7) plus what every check reports.
KEYS = {
    "refnet_adjacency": {"error_by_rank", "error_at_full_rank", "decreasing_in_k", "control_error_at_full_rank",
                         "gradient_vs_closed_form"},
    "refnet_unimodal": {"per_seed", "refiner_higher_r2_seeds", "accuracy_drop"},
    "profusion_synthetic": {"win_rate", "mean_relative_mse_change", "trials", "cells", "robust_auc", "train_mse"},
    "profusion_zero_context": {"max_abs_difference"},
    "tuple_weak_modality": {"r2_weak", "r2", "r2_fused", "accuracy", "chance"},
    "tuple_reinforce_sign": {"delta_mu1", "max_abs_delta_equal", "ascent_mu1"},
    "mdm_gaussians": {"truth", "estimates", "spread"},
    "cmvqvae_contradictory": {"zeta", "zeta_control"},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_adjacency_exact_at_full_rank_and_not_below():
    rng = make_rng(0, "test")
    a = rf.random_adjacency(8, rng)
    assert torch.equal(a, a.T) and torch.equal(a.diagonal(), torch.ones(8)) and set(a.unique().tolist()) <= {0, 1}
    f = torch.from_numpy(rng.standard_normal((8, 16)))
    full = rf.relative_error(rf.reconstruct(a, f, torch.from_numpy(rng.standard_normal((8, 8))))[0], a)
    low = rf.relative_error(rf.reconstruct(a, f, torch.from_numpy(rng.standard_normal((3, 8))))[0], a)
    short = rf.relative_error(rf.reconstruct(a, f[:, :5], torch.from_numpy(rng.standard_normal((8, 8))))[0], a)
    assert full < 1e-9 < 0.1 < low and short > 0.1  # exact at k = m, not at k < m, nor with d < m


def test_adam_refiner_reaches_the_closed_form_when_well_conditioned():
    rng = make_rng(1, "test")
    f = torch.from_numpy(rng.standard_normal((6, 12)))
    q = torch.linalg.qr(torch.from_numpy(rng.standard_normal((6, 6))))[0]
    fitted = rf.adam_refiner(q @ f, f, steps=2000, lr=1e-2)  # the check's settings
    assert torch.allclose(fitted, f @ torch.linalg.pinv(q @ f), atol=1e-4)  # R1b's criterion


def test_probe_r2_is_one_for_a_linear_target_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(300, 5, generator=g), torch.randn(300, 3, generator=g)
    y = x @ torch.randn(5, 3, generator=g) + 2.0
    assert rf.probe_r2(x[:200], y[:200], x[200:], y[200:], ridge=0.0) == pytest.approx(1.0, abs=1e-9)
    assert rf.probe_r2(x[:200], y[:200], x[200:], y[200:]) == pytest.approx(1.0, abs=1e-4)  # the penalty shrinks
    assert abs(rf.probe_r2(x[:200], noise[:200], x[200:], noise[200:])) < 0.1


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_keys_are_stable_json(name):
    result = run_check(name, **TINY[name])
    assert KEYS[name] | {"paper", "passed", "measured"} <= set(result)
    assert result["passed"] and all(isinstance(ok, bool) for ok in result["passed"].values())
    assert json.loads(json.dumps(fidelity.plain(result))) == fidelity.plain(result)


def test_adjacency_ranks_are_string_keys_with_m_added():
    result = run_check("refnet_adjacency", **TINY["refnet_adjacency"])
    assert list(result["error_by_rank"]) == ["2", "4", "7", "8"]
    assert result["error_at_full_rank"] == result["error_by_rank"]["8"] < 1e-8


@pytest.mark.parametrize("method, options", [(late_fusion, pf.BASE), (profusion, pf.PROFUSION)])
def test_stacked_training_equals_a_loop_per_trial(method, options):
    runs = pf._trials([(1.0, 0.5)], 3, 0)
    train = {k: v[:, :64] for k, v in pf._stack(runs, "train").items()}
    order = torch.stack([batch_order(64, 4, 16, torch.Generator().manual_seed(t["order"])) for t in runs])
    params, buffers = train_stacked(method, [pf._built(method, options, t["init"]) for t in runs], train, order)
    looped = list(train_each(method, [pf._built(method, options, t["init"]) for t in runs], train, order))
    for t, model in enumerate(looped):
        state, initial = model.state_dict(), pf._built(method, options, runs[t]["init"]).state_dict()
        trained = unstack(params, t)
        for name, value in trained.items():
            assert torch.allclose(value, state[name], atol=1e-5), name
        assert not all(torch.equal(value, initial[name]) for name, value in trained.items())  # it did train
    inputs = {k: train[k] for k in ("feat_a", "feat_b")}
    stacked = predict_stacked(looped[0], params, buffers, inputs)
    with torch.no_grad():
        each = torch.stack([m.eval()({k: v[t] for k, v in inputs.items()}) for t, m in enumerate(looped)])
    assert torch.allclose(stacked, each, atol=1e-4)


def test_batch_order_covers_every_sample_once_per_epoch():
    order = batch_order(10, 5, 4, torch.Generator().manual_seed(0))  # 20 draws = two epochs of 10
    assert order.shape == (5, 4)
    flat = order.flatten()
    assert sorted(flat[:10].tolist()) == list(range(10)) == sorted(flat[10:].tolist())


def test_seed_offset_draws_fresh_data_and_the_same_offset_repeats():
    def first_trial(offset):
        return pf._trials([(0.5, 0.5)], 1, offset)[0]

    a, b, again = first_trial(0), first_trial(1), first_trial(0)
    assert not np.array_equal(a["train"]["feat_a"], b["train"]["feat_a"]) and a["init"] != b["init"]
    assert np.array_equal(a["train"]["feat_a"], again["train"]["feat_a"]) and a["init"] == again["init"]
    small = TINY["refnet_adjacency"]
    assert (run_check("refnet_adjacency", seed_offset=1, **small)["error_by_rank_seeds"]
            != run_check("refnet_adjacency", seed_offset=0, **small)["error_by_rank_seeds"])


def test_b1_test_noise_levels_share_one_noise_draw():
    trial = pf.b1_trial(make_rng(0, "b1"), eta=1.0, sigma_2=0.5, settings={**pf.SETTINGS, "n_train": 5, "n_test": 7})
    x2 = trial["test"]["feat_b"]  # [1 + L, M, dim_x]: own sigma, then TEST_SIGMAS
    assert x2.shape == (1 + len(pf.TEST_SIGMAS), 7, 8) and trial["train"]["feat_b"].shape == (5, 8)
    clean = x2[1 + pf.TEST_SIGMAS.index(0.0)]
    assert np.allclose(x2[0] - clean, (x2[1 + pf.TEST_SIGMAS.index(1.0)] - clean) * 0.5, atol=1e-5)
    assert np.all(np.abs(clean) <= 1.0)  # sigma 0: X_2 = sin(W_2 Z)


def test_unknown_check_option_and_grid_are_config_errors():
    with pytest.raises(ConfigError, match="known: .*profusion_synthetic"):
        run_check("nope")
    with pytest.raises(ConfigError, match="adam_steps"):
        run_check("refnet_adjacency", bogus=1)
    with pytest.raises(ConfigError, match="quick, full"):
        run_check("profusion_synthetic", grid="huge")
    assert check_options("profusion_synthetic")["grid"] == "quick"


def test_cli_writes_the_file_byte_identically_and_the_table_reads_it(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"fidelity": {"refnet_adjacency": {**TINY["refnet_adjacency"], "seeds": 3}}}))
    argv = ["refnet_adjacency", "--results", str(tmp_path), "--params", str(params), "--option", "seeds=2"]
    assert fidelity.main(argv) == 0
    path = tmp_path / "refnet_adjacency.json"
    first = path.read_bytes()
    assert fidelity.main(argv) == 0 and path.read_bytes() == first
    result = json.loads(first)
    assert result["check"] == "refnet_adjacency" and result["seed_offset"] == 0
    assert result["options"]["m"] == 8 and result["seeds"] == 2  # params.yaml's block, --option on top
    assert "fidelity refnet_adjacency: error" in capsys.readouterr().out
    from pipelines.report import fidelity_table

    table = fidelity_table(tmp_path, ["refnet_adjacency"])
    assert table.splitlines()[2].startswith("| refnet_adjacency | error ")
    assert "No controlled checks" in fidelity_table(tmp_path / "empty", [])


def test_cli_seed_offset_from_params_or_flag(tmp_path):
    params = tmp_path / "params.yaml"
    block = {**TINY["refnet_adjacency"], "seed_offset": 3}
    params.write_text(yaml.safe_dump({"fidelity": {"refnet_adjacency": block}}))
    base = ["refnet_adjacency", "--results", str(tmp_path), "--params", str(params)]
    fidelity.main(base)
    assert json.loads((tmp_path / "refnet_adjacency.json").read_text())["seed_offset"] == 3
    fidelity.main([*base, "--seed-offset", "5"])
    assert json.loads((tmp_path / "refnet_adjacency.json").read_text())["seed_offset"] == 5


def test_plain_rounds_floats_and_converts_containers():
    value = {1: (np.float32(0.1234567891), torch.tensor(2.0)), "b": [float("nan"), True, 3]}
    assert fidelity.plain(value) == {"1": [0.123457, 2.0], "b": [None, True, 3]}
