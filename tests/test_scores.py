"""mmdata.metrics.scores against sklearn (the reference its docstrings promise) on random and edge inputs."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from mmdata.metrics.scores import auroc, f1_multilabel, f1_single_label


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_single_label_f1_matches_sklearn(seed, average):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, size=40)
    pred = np.where(rng.random(40) < 0.5, truth, rng.integers(0, 6, size=40))  # label 5 only ever predicted
    want = f1_score(truth, pred, average=average, zero_division=0)
    assert f1_single_label(truth, pred, average) == pytest.approx(want)
    bools_t, bools_p = truth >= 2, pred >= 3
    want = f1_score(bools_t, bools_p, average=average, zero_division=0)
    assert f1_single_label(bools_t, bools_p, average) == pytest.approx(want)


def test_single_label_f1_edges():
    assert f1_single_label(np.array([], dtype=int), np.array([], dtype=int), "macro") == 0.0
    assert f1_single_label(np.ones(4, bool), np.zeros(4, bool), "weighted") == 0.0  # nothing right
    with pytest.raises(ValueError, match="average"):
        f1_single_label(np.ones(3), np.ones(3), "micro")


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    hot = (rng.random((30, 7)) < 0.3).astype(int)
    hot[:, 6] = 0  # a class absent from truth
    pred = (rng.random((30, 7)) < 0.3).astype(int)
    pred[:, 5] = 0  # a class never predicted
    pred[:, 6] = 0  # and one empty on both sides: F1 0 for macro
    micro, macro = f1_multilabel(hot, pred)
    assert micro == pytest.approx(f1_score(hot, pred, average="micro", zero_division=0))
    assert macro == pytest.approx(f1_score(hot, pred, average="macro", zero_division=0))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=60)
    score = np.round(rng.normal(size=60) + truth, 1)  # rounding makes ties across classes
    assert auroc(truth, score) == pytest.approx(roc_auc_score(truth, score))


def test_auroc_hand_cases():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auroc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie counts one half
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.ones(3), np.arange(3.0))
