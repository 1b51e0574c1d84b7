"""Semantic segmentation metrics on per-pixel class maps: mIoU, pixel and mean class accuracy.

Conventions of the NYUv2 benchmarks (ESANet, FuseNet, RedNet): label 0 is void and never counted, neither in
the truth (pixels ignored) nor as a prediction target; IoU per class is ``TP / (TP + FP + FN)`` accumulated
over the whole test set (one confusion matrix, not a mean of per-image scores); the mean runs over the classes
that occur in the truth or the predictions (classes absent from both have no defined IoU and are left out,
as ``np.nanmean`` does in those codebases).

The 13-class scores use the fixed NYUv2 40 -> 13 table of Couprie et al. 2013 (``class13Mapping.mat``:
``labels13``), reproduced in :data:`NYU40_TO_13`; the NYUv2 reader checks its file against it.
"""
from __future__ import annotations

import numpy as np

#: ``NYU40_TO_13[c]`` is the 13-class id (1..13) of 40-class id ``c`` (1..40); index 0 (void) stays 0.
#: 13 classes: bed, books, ceiling, chair, floor, furniture, objects, picture, sofa, table, tv, wall, window.
NYU40_TO_13 = np.array([0, 12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5, 7, 3, 2, 6, 11, 7, 7,
                        7, 7, 7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7], dtype=np.int64)
VOID = 0


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix ``[num_classes, num_classes]`` (rows truth, columns prediction) over non-void pixels.

    Args:
        pred: predicted class ids, any shape (e.g. [N, H, W]).
        truth: true class ids of the same shape; pixels with ``truth == 0`` (void) are ignored.
        num_classes: number of ids including void (ids must lie in ``0..num_classes - 1``).

    Raises:
        ValueError: shapes differ or an id is outside the range.
    """
    pred, truth = np.asarray(pred).reshape(-1), np.asarray(truth).reshape(-1)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ in size: {pred.size} vs {truth.size} pixels")
    keep = truth != VOID
    pred, truth = pred[keep].astype(np.int64), truth[keep].astype(np.int64)
    for name, ids in (("pred", pred), ("truth", truth)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} holds ids [{ids.min()}, {ids.max()}] outside 0..{num_classes - 1}")
    flat = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def scores(conf: np.ndarray) -> dict[str, float]:
    """``miou``, ``pixel_acc`` and ``mean_acc`` of a confusion matrix (void row/column 0 excluded).

    A predicted void counts as a miss of the true class. Classes with no truth and no prediction are left
    out of the means; an empty matrix scores 0.0 everywhere (so metrics.json stays valid JSON).
    """
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)[1:]
    truth_total = conf[1:, :].sum(axis=1)
    pred_total = conf[:, 1:].sum(axis=0)
    union = truth_total + pred_total - tp
    present = union > 0
    if not present.any():
        return {"miou": 0.0, "pixel_acc": 0.0, "mean_acc": 0.0}
    seen = truth_total > 0
    return {"miou": float(np.mean(tp[present] / union[present])),
            "pixel_acc": float(tp.sum() / truth_total.sum()),
            "mean_acc": float(np.mean(tp[seen] / truth_total[seen])) if seen.any() else 0.0}


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """NYUv2-style scores of 40-class maps, plus the same after the fixed 40 -> 13 mapping.

    Args:
        pred: predicted 40-class ids [N, H, W] (0 = void is allowed and counts as wrong).
        truth: true 40-class ids [N, H, W], 0 = void (ignored).

    Returns:
        ``miou40``, ``pixel_acc40``, ``mean_acc40``, ``miou13``, ``pixel_acc13``, ``mean_acc13`` as floats.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.size == 0 or pred.size != truth.size:
        raise ValueError(f"pred and truth must be non-empty and of equal size, got {pred.shape} vs {truth.shape}")
    out = {}
    for suffix, table in (("40", None), ("13", NYU40_TO_13)):
        p, t = (pred, truth) if table is None else (_mapped(pred, table), _mapped(truth, table))
        num_classes = len(NYU40_TO_13) if table is None else int(NYU40_TO_13.max()) + 1
        out.update({f"{k}{suffix}": v for k, v in scores(confusion(p, t, num_classes)).items()})
    return out


def _mapped(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[ids]`` with a clear error for ids outside the table."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise ValueError(f"class ids [{ids.min()}, {ids.max()}] outside the 40-class range 0..{len(table) - 1}")
    return table[ids]
