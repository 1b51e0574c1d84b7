"""The task head's side of every fusion method: which task a label field poses, its loss, its predictions.

Shared so that late fusion, ReFNet, Progressive Fusion and the later methods score a batch the same way; a
method adds its own terms (refiner losses, bounds) to :func:`task_loss`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmdata.types import Field

#: Regression losses by name: ``loss(pred [B], target [B]) -> scalar``. L1 is what MMSA and MultiBench train
#: MOSI/MOSEI regression with; MSE is MultiBench's choice for the stock series.
REGRESSION_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
TASKS = ("classification", "multilabel", "regression")


def task_of(label: Field) -> str:
    """"classification" (class ids), "multilabel" (a class label of shape [C], e.g. multi-hot genres) or
    "regression" (no classes)."""
    return "regression" if not label.classes else "multilabel" if label.shape else "classification"


def check_label(method: str, name: str, label: Field) -> None:
    """Raise ValueError unless a per-sample head can predict the label: one class id, a multi-hot [C] or one
    value per sample (a class map or a box list needs a task-specific method)."""
    if (label.classes and len(label.shape) <= 1) or (not label.classes and label.shape == ()):
        return
    raise ValueError(f"{method} predicts one class, a multi-hot vector [C] or one value per sample; label {name!r} "
                     f"({label.dtype}, shape {list(label.shape)}, {len(label.classes or ())} classes) is none of "
                     f"these (class maps: rgbd_seg, boxes: point_boxes)")


def head_size(label: Field) -> int:
    """Outputs of the head: C logits for a class label, 1 value for regression."""
    return len(label.classes) if label.classes else 1


def target(batch: dict[str, Any], label_name: str, task: str, device: torch.device) -> torch.Tensor:
    """The batch's labels on ``device``: int64 [B] (classification), float32 multi-hot [B, C] or float32 [B]."""
    y = batch[label_name].to(device, non_blocking=True)
    return y.long() if task == "classification" else y.float()


def task_loss(task: str, out: torch.Tensor, y: torch.Tensor, regression_loss: str = "l1") -> torch.Tensor:
    """Cross-entropy (classification), per-class binary cross-entropy (multilabel, as MultiBench and MMBT train
    MM-IMDB) or ``REGRESSION_LOSSES[regression_loss]``; ``out`` [B, C] logits or [B] values, in float32."""
    if task == "classification":
        return F.cross_entropy(out, y)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(out, y)
    return REGRESSION_LOSSES[regression_loss](out, y)


def task_pred(task: str, out: torch.Tensor) -> torch.Tensor:
    """Detached hard predictions: class ids [B], 0/1 per class at probability 0.5 [B, C], or values [B]."""
    if task == "classification":
        return out.argmax(dim=-1).detach()
    return (out > 0).long().detach() if task == "multilabel" else out.detach()


def task_scores(task: str, out: torch.Tensor) -> torch.Tensor:
    """What the metrics read: softmax probabilities [B, C] (classification: AUROC needs scores), sigmoid
    probabilities [B, C] (multilabel) or values [B] (regression)."""
    if task == "classification":
        return out.softmax(dim=-1)
    return out.sigmoid() if task == "multilabel" else out
