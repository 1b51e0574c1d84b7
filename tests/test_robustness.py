"""Robustness: the two areas (methods.md 2.3, P4), the modality-drop corruption, and per-run curves."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from methods import late_fusion
from methods.loop import evaluate
from mmdata.metrics.robustness import (LEVELS, corrupt, corruption_policy, drop, drop_draws, multibench_robustness,
                                      robust_auc)
from pipelines.robustness import robustness_curves, robustness_summary
from tests.conftest import TOY_FEATURES
from tests.test_methods import fake_batch

# --- the two numbers: P4 arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 11])
def test_multibench_area_of_a_constant_curve_is_r_times_n_minus_1_times_step(n):
    assert multibench_robustness([0.7] * n) == pytest.approx(0.7 * (n - 1) * 0.1)
    assert multibench_robustness([0.7] * n, step=0.25) == pytest.approx(0.7 * (n - 1) * 0.25)
    assert multibench_robustness([0.7] * n, higher_is_better=False) == pytest.approx(-0.7 * (n - 1) * 0.1)


def test_multibench_area_hand_computed_and_errors():
    # (1.0 + 0.8) * 0.05 + (0.8 + 0.4) * 0.05 = 0.15
    assert multibench_robustness([1.0, 0.8, 0.4]) == pytest.approx(0.15)
    for bad in ([0.5], [0.5, float("nan")], [[0.5, 0.4]]):
        with pytest.raises(ValueError, match="finite scores"):
            multibench_robustness(bad)
    with pytest.raises(ValueError, match="step"):
        multibench_robustness([0.5, 0.4], step=0.0)


@pytest.mark.parametrize("reduce", ["integral", "mean"])
def test_robust_auc_of_a_constant_offset_is_the_offset(reduce):
    base = np.linspace(0.9, 0.3, len(LEVELS))
    assert robust_auc(LEVELS, base + 0.1, base, reduce=reduce) == pytest.approx(0.1)
    # an error metric 0.1 higher than the baseline's everywhere is worse: -0.1
    assert robust_auc(LEVELS, base + 0.1, base, higher_is_better=False, reduce=reduce) == pytest.approx(-0.1)
    assert robust_auc(LEVELS, base, base, reduce=reduce) == 0.0


# --- the drop corruption ------------------------------------------------------------------------------------


def _batch(size=200, seed=0):
    batch = fake_batch(TOY_FEATURES, size, seed)
    batch["image"] = batch["image"].clamp_min(1)  # no zero pixel: a zeroed row is a dropped row
    return batch


def _dropped_rows(out):
    return (out["feat_audio_lengths"] == 0).numpy()


def test_drop_is_seeded_monotone_in_level_and_empties_the_field():
    batch = _batch()
    previous = np.zeros(200, dtype=bool)
    for level in LEVELS:
        out = drop(batch, level, fields=["image", "feat_audio", "text"], seed=3)
        rows = _dropped_rows(out)
        assert np.all(rows >= previous), level  # common random numbers: dropped once, dropped at every higher level
        assert abs(rows.mean() - level) < 0.1, level
        assert np.array_equal((out["image"] == 0).all(dim=(1, 2)).numpy(), rows)
        assert not out["feat_audio"][rows].any() and not out["feat_audio_mask"][rows].any()
        assert [t == "" for t in out["text"]] == rows.tolist()
        kept = ~rows
        assert torch.equal(out["image"][kept], batch["image"][kept])
        assert torch.equal(out["feat_audio_lengths"][kept], batch["feat_audio_lengths"][kept])
        previous = rows
    assert _dropped_rows(drop(batch, 1.0, fields=["feat_audio"], seed=3)).all()
    assert not _dropped_rows(drop(batch, 0.0, fields=["feat_audio"], seed=3)).any()
    again = drop(batch, 0.5, fields=["feat_audio"], seed=3)
    assert np.array_equal(_dropped_rows(again), _dropped_rows(drop(batch, 0.5, fields=["feat_audio"], seed=3)))
    assert not np.array_equal(_dropped_rows(again), _dropped_rows(drop(batch, 0.5, fields=["feat_audio"], seed=4)))


def test_drop_is_keyed_by_sample_not_by_batch():
    batch = _batch(40)
    whole = _dropped_rows(drop(batch, 0.5, fields=["feat_audio"], seed=1))
    half = {k: v[20:] if isinstance(v, torch.Tensor) else v[20:] for k, v in batch.items()}
    assert np.array_equal(_dropped_rows(drop(half, 0.5, fields=["feat_audio"], seed=1)), whole[20:])
    assert np.array_equal(whole, drop_draws(batch["__key__"], seed=1) < 0.5)


def test_drop_and_corrupt_leave_other_fields_and_the_input_untouched():
    batch = _batch(50)
    snapshot = {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in batch.items()}
    for out in (drop(batch, 0.8, fields=["image"], seed=0), corrupt(batch, 0.8, fields=["image"], seed=0)):
        assert not torch.equal(out["image"], batch["image"])
        for name in ("feat_audio", "feat_audio_lengths", "feat_audio_mask", "text", "label", "__key__"):
            assert out[name] is batch[name], name
    for name, value in snapshot.items():
        assert (torch.equal(value, batch[name]) if isinstance(value, torch.Tensor) else value == batch[name]), name


def test_corrupting_the_cloud_leaves_the_per_point_feature_fields_alone():
    g = torch.Generator().manual_seed(0)
    batch = {"__key__": ["a", "b"], "points": torch.randn(2, 16, 3, generator=g),
             "points_rgb": torch.rand(2, 16, 3, generator=g), "points_height": torch.rand(2, 16, 1, generator=g)}
    assert corruption_policy(["points", "points_rgb", "points_height"]) == {"points": ("jitter",)}
    out = corrupt(batch, 1.0, fields=["points"])
    assert not torch.equal(out["points"], batch["points"])
    assert out["points_rgb"] is batch["points_rgb"] and out["points_height"] is batch["points_height"]
    assert corrupt(batch, 1.0, fields=["points_height"])["points_height"] is batch["points_height"]


def test_drop_errors_name_the_problem():
    batch = _batch(4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop(batch, 1.5, fields=["image"])
    with pytest.raises(ValueError, match="nope"):
        drop(batch, 0.5, fields=["nope"])
    with pytest.raises(ValueError, match="single sample"):
        drop({"__key__": "k", "image": np.zeros((8, 8))}, 0.5, fields=["image"])


# --- curves and summary ---------------------------------------------------------------------------------------


def _true_class_probability(pred, truth):
    """A continuous metric: the mean predicted probability of the true class (any change in pred shows)."""
    return float(pred[np.arange(len(truth)), truth].mean())


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = late_fusion.build_model(TOY_FEATURES, fields=["image", "feat_audio", "text"], dim=8, hidden=16)
    model.train()  # curves must switch to eval mode and back
    return model, [fake_batch(TOY_FEATURES, 16, seed) for seed in range(3)]


def test_curves_start_at_the_clean_score_and_keep_the_mode(run):
    model, batches = run
    levels = (0.0, 0.5, 1.0)
    curves = robustness_curves(late_fusion, model, iter(batches), fields=["image", "feat_audio", "text"],
                               metric=_true_class_probability, levels=levels, seed=0)
    pred, truth, _ = evaluate(late_fusion, model, batches)
    clean = _true_class_probability(pred, truth)
    assert model.training
    assert set(curves) == {"image", "feat_audio", "text"}
    for field, by_corruption in curves.items():
        assert set(by_corruption) == {"noise", "drop"}
        for scores in by_corruption.values():
            assert len(scores) == 3 and scores[0] == pytest.approx(clean, abs=1e-7)
        assert by_corruption["drop"][2] != pytest.approx(clean), field  # dropping a field changes the output


def test_drop_curve_equals_dropping_and_predicting_level_by_level(run):
    model, batches = run
    levels = (0.0, 0.3, 0.6, 1.0)
    curves = robustness_curves(late_fusion, model, batches, fields=["feat_audio"], metric=_true_class_probability,
                               levels=levels, seed=5)
    model.eval()
    naive = []
    with torch.no_grad():
        for level in levels:
            pred, truth, _ = evaluate(late_fusion, model, [drop(b, level, fields=["feat_audio"], seed=5)
                                                           for b in batches])
            naive.append(_true_class_probability(pred, truth))
    model.train()
    assert curves["feat_audio"]["drop"] == pytest.approx(naive, abs=1e-6)


def test_curves_reject_bad_levels_and_unknown_fields(run):
    model, batches = run
    with pytest.raises(ValueError, match="increasing"):
        robustness_curves(late_fusion, model, batches, fields=["image"], metric=_true_class_probability,
                          levels=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="depth"):
        robustness_curves(late_fusion, model, batches, fields=["depth"], metric=_true_class_probability)


def test_summary_keys_and_a_run_against_itself():
    levels = (0.0, 0.5, 1.0)
    curves = {"image": {"noise": [0.9, 0.8, 0.6], "drop": [0.9, 0.6, 0.3]}, "text": {"drop": [0.9, 0.9, 0.9]}}
    alone = robustness_summary(curves, levels, True)
    assert alone == pytest.approx({"multibench_robustness_image_noise": (1.7 + 1.4) * 0.25,
                                   "multibench_robustness_image_drop": (1.5 + 0.9) * 0.25,
                                   "multibench_robustness_text_drop": 0.9})
    against_self = robustness_summary(curves, levels, True, baseline_curves=curves)
    assert {k: v for k, v in against_self.items() if k.startswith("robust_auc_")} == {
        "robust_auc_image_noise": 0.0, "robust_auc_image_drop": 0.0, "robust_auc_text_drop": 0.0}
    baseline = {"image": {"noise": [0.9, 0.7, 0.3], "drop": [0.9, 0.6, 0.3]}}  # no text field: skipped
    summary = robustness_summary(curves, levels, False, baseline_curves=baseline)
    assert set(summary) == set(alone) | {"robust_auc_image_noise", "robust_auc_image_drop"}
    assert summary["robust_auc_image_noise"] == pytest.approx(-0.125)  # error metric: sign flipped
    assert summary["multibench_robustness_text_drop"] == pytest.approx(-0.9)
    with pytest.raises(ValueError, match="equally spaced"):
        robustness_summary(curves, (0.0, 0.2, 1.0), True)
    with pytest.raises(ValueError, match="3 levels"):
        robustness_summary({"image": {"drop": [0.9, 0.8]}}, levels, True)
