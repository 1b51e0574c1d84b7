"""F1 and AUROC in plain numpy, with sklearn's conventions (``zero_division=0``, average ranks for ties).

Why not sklearn: importing ``sklearn.metrics`` costs about a second (it pulls in scipy.stats), and every DVC
evaluate stage is its own process, so the import alone was minutes of ``dvc repro``. The tests check every
function here against sklearn on random inputs.
"""
from __future__ import annotations

import numpy as np


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-entry F1 = 2tp / (2tp + fp + fn), 0 where the denominator is 0 (sklearn's ``zero_division=0``)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def f1_single_label(truth: np.ndarray, pred: np.ndarray, average: str) -> float:
    """F1 of single-label predictions over the labels present in truth or pred (sklearn's label set).

    Args:
        truth: true labels [n] (ints or bools).
        pred: predicted labels [n].
        average: ``"macro"`` (unweighted mean over labels) or ``"weighted"`` (weighted by true support).

    Returns:
        The averaged F1; 0.0 for an empty input.
    """
    truth, pred = np.asarray(truth).reshape(-1), np.asarray(pred).reshape(-1)
    if truth.size == 0:
        return 0.0
    labels = np.union1d(truth, pred)
    t, p = truth[:, None] == labels, pred[:, None] == labels  # [n, L] one-hot
    per_label = _f1((t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0))
    if average == "macro":
        return float(per_label.mean())
    if average == "weighted":
        support = t.sum(0)
        return float((per_label * support).sum() / support.sum())
    raise ValueError(f"average must be 'macro' or 'weighted', got {average!r}")


def f1_multilabel(hot: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Micro and macro F1 of multi-hot predictions [n, C] against multi-hot truth [n, C].

    Macro averages over all C columns, a column empty in both scoring 0 (sklearn's ``zero_division=0``).
    """
    hot, pred = np.asarray(hot).astype(bool), np.asarray(pred).astype(bool)
    tp, fp, fn = (hot & pred).sum(0), (~hot & pred).sum(0), (hot & ~pred).sum(0)
    micro = _f1(tp.sum(), fp.sum(), fn.sum())
    return float(micro), float(_f1(tp, fp, fn).mean())


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks [n] of x [n], tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each run of equal values
    ends = np.r_[starts[1:], len(xs)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of binary truth [n] (0/1) against scores [n], ties counted one half.

    Computed as the Mann-Whitney U statistic over average ranks, which equals sklearn's trapezoidal
    ``roc_auc_score``. Raises ValueError unless both classes are present.
    """
    truth = np.asarray(truth).reshape(-1).astype(bool)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes in truth")
    rank_sum = _average_ranks(score)[truth].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
