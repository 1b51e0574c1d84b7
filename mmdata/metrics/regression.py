"""Sentiment-regression metrics exactly as MMSA computes them for MOSI/MOSEI (``metricsTop.py``).

MMSA reports MAE and Pearson r on the raw outputs, 7- and 5-class accuracy after clipping and rounding, and two
binary accuracies: negative vs non-negative over all samples ("Has0") and negative vs positive after dropping
samples whose truth is exactly 0 ("Non0"). Papers that say just "Acc-2/F1" usually mean Non0 (MMSA#45, #92).
"""
from __future__ import annotations

import numpy as np

from mmdata.metrics.scores import f1_single_label


def _multiclass_acc(pred: np.ndarray, truth: np.ndarray, bound: float) -> float:
    """Share of samples whose clipped, rounded prediction equals the clipped, rounded truth.

    np.round rounds half to even (0.5 -> 0, 2.5 -> 2), which is what MMSA does; the SDK's
    ``cmumosei_round`` breaks ties differently, so the two never quite agree on acc7.
    """
    pred_c = np.round(np.clip(pred, -bound, bound))
    truth_c = np.round(np.clip(truth, -bound, bound))
    return float(np.mean(pred_c == truth_c))


def _binary(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Accuracy and weighted F1 (sklearn's, as MMSA) of two boolean arrays [n]; (0.0, 0.0) when n == 0."""
    if truth.size == 0:
        return 0.0, 0.0
    acc = float(np.mean(pred == truth))
    return acc, f1_single_label(truth, pred, "weighted")


def _pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson r via np.corrcoef, like MMSA.

    Undefined when either side is constant (or n < 2): np.corrcoef then returns nan with a warning. We return
    0.0 instead ("no linear relation measurable") because metrics.json must be strict JSON and DVC cannot diff
    NaN; a constant predictor is the usual cause (a collapsed regressor) and 0.0 ranks it correctly.
    """
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return 0.0
    r = float(np.corrcoef(pred, truth)[0, 1])
    return r if np.isfinite(r) else 0.0


def mmsa_regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MMSA's regression metrics for MOSI/MOSEI-style sentiment scores in [-3, 3].

    Args:
        pred: predicted scores [n] (any shape that flattens to n; unclipped).
        truth: true scores [n].

    Returns:
        Plain floats: ``mae``, ``corr`` (0.0 when undefined, see :func:`_pearson`), ``acc7`` (clip +-3),
        ``acc5`` (clip +-2), ``has0_acc2``, ``has0_f1`` (truth >= 0 vs pred >= 0, all samples), ``non0_acc2``,
        ``non0_f1`` (truth > 0 vs pred > 0 after dropping truth == 0; 0.0 when every truth is 0).
        MMSA rounds its printed values to 4 decimals; we keep full precision and leave rounding to reports.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if pred.shape != truth.shape or pred.size == 0:
        raise ValueError(f"pred and truth must be non-empty and equally long, got {pred.shape} vs {truth.shape}")
    has0_acc2, has0_f1 = _binary(pred >= 0, truth >= 0)
    keep = truth != 0
    non0_acc2, non0_f1 = _binary(pred[keep] > 0, truth[keep] > 0)
    return {
        "mae": float(np.mean(np.abs(pred - truth))),
        "corr": _pearson(pred, truth),
        "acc7": _multiclass_acc(pred, truth, 3.0),
        "acc5": _multiclass_acc(pred, truth, 2.0),
        "has0_acc2": has0_acc2,
        "has0_f1": has0_f1,
        "non0_acc2": non0_acc2,
        "non0_f1": non0_f1,
    }
