"""Label-based pair mining for supervised metric losses (ReFNet_MS uses the multi-similarity loss).

Relations between two different items ``i != j`` of a batch:

- single-label: *same* when the labels are equal, *different* otherwise;
- multi-label (multi-hot ``[n, C]``): *same* when they share at least one label, *different* when they share
  none. The two relations never overlap, so a pair is never pulled and pushed at once (two rows without any
  label share none and count as different).

An item whose class has no other member in the batch (reliability SMP-01) simply has no positive pair: it is
counted by the caller from the returned pairs, never retried.

Hard negatives take an injected ``similarity(a [n, d], b [m, d]) -> [n, m]`` (a policy argument, as
pytorch-metric-learning's ``distance=``): cosine by default, :func:`dot_similarity` for the paper's dot
product, or any learned metric.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mmdata.types import DROPPED, Tuples

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of ``a [n, d]`` with every row of ``b [m, d]``: ``[n, m]``."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return a @ b.transpose(-1, -2)


def dot_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product of every row of ``a [n, d]`` with every row of ``b [m, d]``: ``[n, m]``."""
    return a @ b.transpose(-1, -2)


def same_label_matrix(labels: Any) -> np.ndarray:
    """bool ``[n, n]``: items i and j share a label (diagonal included; see the module docstring)."""
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim == 2:
        hot = labels.astype(np.float32) != 0
        return (hot.astype(np.float32) @ hot.T.astype(np.float32)) > 0
    return labels[:, None] == labels[None, :]


def _pairs(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    np.fill_diagonal(matrix, False)
    i, j = np.nonzero(matrix)
    return i.astype(np.int64), j.astype(np.int64)


def same_label_pairs(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """All ordered positive pairs ``(i, j)``, ``i != j``, with a shared label, in row-major order.

    Args:
        labels: int ``[n]`` or multi-hot ``[n, C]`` (numpy or torch).

    Returns:
        ``(i, j)``, two int64 ``[P]`` arrays.
    """
    return _pairs(same_label_matrix(labels))


def different_label_pairs(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """All ordered negative pairs ``(i, j)`` sharing no label, in row-major order (int64 ``[P]`` each)."""
    return _pairs(~same_label_matrix(labels))


def hard_negatives(embeddings: torch.Tensor, labels: Any, k: int, *,
                   similarity: Similarity = cosine_similarity) -> np.ndarray:
    """The ``k`` most similar items with a different label, per anchor.

    Args:
        embeddings: ``[n, d]`` (torch or numpy).
        labels: int ``[n]`` or multi-hot ``[n, C]``.
        k: negatives per anchor.
        similarity: ``(a [n, d], b [m, d]) -> [n, m]``; larger = more similar.

    Returns:
        int64 ``[n, k]`` batch rows, most similar first; where an anchor has fewer than ``k`` different-label
        items the tail is padded with :data:`DROPPED` (-1), which :func:`mmdata.samplers.gather.gather`
        fills with a placeholder and :func:`mmdata.samplers.loss.tuple_infonce` can mask.
    """
    x = torch.as_tensor(embeddings)
    with torch.no_grad():
        scores = similarity(x, x).float()
    different = torch.as_tensor(~same_label_matrix(labels), device=scores.device)
    scores = scores.masked_fill(~different, float("-inf"))
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    rows = torch.where(torch.isinf(top.values), torch.full_like(top.indices, DROPPED), top.indices)
    out = np.full((x.shape[0], k), DROPPED, dtype=np.int64)
    out[:, :rows.shape[1]] = rows.cpu().numpy()
    return out


def as_tuples(partners: np.ndarray, modalities: tuple[str, ...]) -> Tuples:
    """Full negatives from partner rows ``[n, k]`` (e.g. :func:`hard_negatives`): Tuples ``[n, k, M]``."""
    partners = np.asarray(partners, dtype=np.int64)
    return Tuples(np.repeat(partners[:, :, None], len(modalities), axis=2), tuple(modalities))
