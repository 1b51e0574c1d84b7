"""Metrics: MMSA regression conventions on a hand-computed case, classification against sklearn."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mmdata.metrics import METRICS, accuracy, classification_metrics, mmsa_regression_metrics

# Hand-computed case: zeros in truth (idx 2, 6), ties at 0.5 / 2.5 / -0.5, and a prediction of exactly 0.0
# (idx 7: non-negative for Has0, not positive for Non0).
TRUTH = np.array([-3.0, -1.5, 0.0, 0.5, 2.5, 1.0, 0.0, -0.2])
PRED = np.array([-2.6, -0.4, 0.3, 0.9, 2.6, -0.1, -0.5, 0.0])


def test_mmsa_hand_computed_case():
    m = mmsa_regression_metrics(PRED, TRUTH)
    assert m["mae"] == pytest.approx(4.1 / 8)
    # round(pred)  = [-3, 0, 0, 1, 3, 0, 0, 0]; round(truth) = [-3, -2, 0, 0, 2, 1, 0, 0] (0.5 -> 0, 2.5 -> 2)
    assert m["acc7"] == pytest.approx(4 / 8)
    # clip +-2 then round: pred [-2, 0, 0, 1, 2, 0, 0, 0]; truth [-2, -2, 0, 0, 2, 1, 0, 0]
    assert m["acc5"] == pytest.approx(5 / 8)
    # Has0: truth>=0 [F F T T T T T F], pred>=0 [F F T T T F F T]
    assert m["has0_acc2"] == pytest.approx(5 / 8)
    f1_pos, f1_neg = 2 * 0.75 * 0.6 / (0.75 + 0.6), 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    assert m["has0_f1"] == pytest.approx((5 * f1_pos + 3 * f1_neg) / 8)
    # Non0 drops idx 2 and 6: truth>0 [F F T T T F], pred>0 [F F T T F F]
    assert m["non0_acc2"] == pytest.approx(5 / 6)
    assert m["non0_f1"] == pytest.approx((3 * 0.8 + 3 * (2 * 0.75 / 1.75)) / 6)
    p, t = PRED - PRED.mean(), TRUTH - TRUTH.mean()
    assert m["corr"] == pytest.approx(float((p * t).sum() / np.sqrt((p * p).sum() * (t * t).sum())))
    assert all(type(v) is float for v in m.values())


def test_round_half_even_at_ties():
    truth = np.array([0.5, 2.5, -0.5, 1.5])
    # np.round: 0.5 -> 0, 2.5 -> 2, -0.5 -> -0, 1.5 -> 2 (round-half-away would give 1, 3, -1, 2).
    assert mmsa_regression_metrics(np.array([0.0, 2.0, 0.0, 2.0]), truth)["acc7"] == 1.0
    assert mmsa_regression_metrics(np.array([1.0, 3.0, -1.0, 2.0]), truth)["acc7"] == 0.25
    # acc5 clips first: 2.5 -> 2 and 3.0 -> 2 agree.
    assert mmsa_regression_metrics(np.array([1.0, 3.0, -1.0, 2.0]), truth)["acc5"] == 0.5


def test_degenerate_cases_are_json_safe():
    m = mmsa_regression_metrics(np.full(4, 0.7), np.array([0.0, 0.0, 0.0, 0.0]))
    assert m["corr"] == 0.0  # constant inputs: documented 0.0 instead of nan
    assert m["non0_acc2"] == 0.0 and m["non0_f1"] == 0.0  # every truth is 0
    json.dumps(m, allow_nan=False)
    with pytest.raises(ValueError):
        mmsa_regression_metrics(np.zeros(3), np.zeros(4))


def test_classification_matches_sklearn():
    rng = np.random.default_rng(0)
    logits, truth = rng.normal(size=(50, 4)), rng.integers(0, 4, size=50)
    m = classification_metrics(logits, truth)
    pred = logits.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert classification_metrics(pred, truth) == m
    assert accuracy(pred, truth) == pytest.approx(accuracy_score(truth, pred))
    json.dumps(m, allow_nan=False)


def test_registry():
    # Other tasks (multilabel, segmentation, forecast, detection) register their own entries.
    assert METRICS["classification"] is classification_metrics
    assert METRICS["regression"] is mmsa_regression_metrics
