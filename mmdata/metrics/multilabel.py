"""Multi-label metrics (MM-IMDB): micro and macro F1 of per-class decisions at probability 0.5.

The convention of MultiBench (``Supervised_Learning.py``: sigmoid outputs rounded), MMBT (``train.py``) and
GMU (``threshold: 0.5`` in ``gmu.json``), all through sklearn's ``f1_score`` (same values here, from
:mod:`mmdata.metrics.scores`). Macro F1 averages over every class, including classes absent from both
truth and predictions (F1 0 there, sklearn's ``zero_division``), which is what those codebases report.
"""
from __future__ import annotations

import numpy as np

from mmdata.metrics.scores import f1_multilabel

THRESHOLD = 0.5


def multilabel_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """Micro and macro F1 of ``scores > threshold`` against multi-hot ``truth``.

    Args:
        scores: per-class probabilities [n, C] (sigmoid outputs).
        truth: multi-hot labels [n, C] (0/1, any numeric dtype).
        threshold: decision threshold on the probabilities (a probability of exactly 0.5 is negative, as
            ``round`` gives in MultiBench).

    Returns:
        ``{"f1_micro": float, "f1_macro": float}``.

    Raises:
        ValueError: the shapes differ or are not [n, C].
    """
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth)
    if scores.ndim != 2 or scores.shape != truth.shape:
        raise ValueError(f"expected scores and truth of the same shape [n, C], got {scores.shape}, {truth.shape}")
    pred, hot = (scores > threshold).astype(np.int64), (truth > 0.5).astype(np.int64)
    if not len(hot):
        return {"f1_micro": 0.0, "f1_macro": 0.0}
    micro, macro = f1_multilabel(hot, pred)
    return {"f1_micro": micro, "f1_macro": macro}
