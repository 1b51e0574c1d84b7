"""Reusable losses and loss weightings, shared by the methods (a method's own objective stays in its module).

- :data:`REGRESSION_LOSSES`: the ``regression_loss`` option of a regression head, by name (defined in
  :mod:`methods.heads`, with the other task-head functions).
- :func:`median_frequency_weights`: per-batch class weights for a dense cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.heads import REGRESSION_LOSSES


def median_frequency_weights(target: torch.Tensor, classes: int, void: int = 0) -> torch.Tensor:
    """Median-frequency class weights [K] (SegNet, FuseNet on NYUv2) from a batch's labelled pixels.

    ``w_c = median(f) / f_c`` over the classes present; absent classes and ``void`` get weight 0 (no pixel
    uses them). Estimated per batch because the loop gives a method no pass over the data before training.

    Args:
        target: class ids, any shape (e.g. [B, H, W]), int64.
        classes: K, the number of classes (``void`` included).
        void: the class id that marks unlabelled pixels.

    Returns:
        float32 [K] on ``target``'s device.
    """
    counts = torch.bincount(target.reshape(-1), minlength=classes)[:classes].float()
    counts[void] = 0
    present = counts > 0
    weight = torch.zeros(classes, device=target.device)
    if present.any():
        freq = counts[present] / counts[present].sum()
        weight[present] = freq.median() / freq
    return weight
