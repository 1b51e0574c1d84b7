"""Classification metrics: accuracy and macro F1 (MultiBench, Hateful Memes, AV-MNIST, CREMA-D conventions)."""
from __future__ import annotations

import numpy as np

from mmdata.metrics.scores import auroc, f1_single_label


def _class_ids(logits_or_pred: np.ndarray) -> np.ndarray:
    """Class ids [n] from either logits/probabilities [n, C] (argmax) or ids [n] (unchanged)."""
    arr = np.asarray(logits_or_pred)
    if arr.ndim == 2:
        return arr.argmax(axis=1)
    if arr.ndim != 1:
        raise ValueError(f"expected class ids [n] or logits [n, C], got shape {arr.shape}")
    return arr.astype(np.int64)


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Share of samples whose predicted class equals the true class.

    Args:
        pred: predicted class ids [n].
        truth: true class ids [n].

    Returns:
        Accuracy in [0, 1] as a plain float (0.0 for an empty input, so reports stay JSON-serialisable).
    """
    pred, truth = np.asarray(pred).reshape(-1), np.asarray(truth).reshape(-1)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ in length: {pred.shape} vs {truth.shape}")
    return float(np.mean(pred == truth)) if truth.size else 0.0


def classification_metrics(logits_or_pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 of a single-label classifier.

    Args:
        logits_or_pred: logits or probabilities [n, C] (argmax taken) or predicted class ids [n].
        truth: true class ids [n].

    Returns:
        ``{"accuracy": float, "f1_macro": float}``. Macro F1 averages over the classes present in truth or
        predictions (sklearn's default); a class never predicted scores F1 0 without a warning. With binary
        scores [n, 2] and both classes in truth, also ``"auroc"`` (Hateful Memes' primary metric, equal to
        sklearn's ``roc_auc_score`` that its README prescribes) of the score difference ``s[:, 1] - s[:, 0]``,
        which ranks like the class-1 probability whether the scores are logits or probabilities.
    """
    pred = _class_ids(logits_or_pred)
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    acc = accuracy(pred, truth)
    f1 = f1_single_label(truth, pred, "macro")
    out = {"accuracy": acc, "f1_macro": f1}
    scores = np.asarray(logits_or_pred)
    if scores.ndim == 2 and scores.shape[1] == 2 and len(np.unique(truth)) == 2:
        out["auroc"] = auroc(truth, scores[:, 1] - scores[:, 0])
    return out
