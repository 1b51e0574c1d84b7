"""The tuple contrastive loss: InfoNCE of each anchor against its positive and its own negatives.

TupleInfoNCE (Liu et al. 2021, eq. 2) scores a fused anchor embedding against the fused embedding of its
positive (an augmented view) and of its k negatives (e.g. disturbed tuples); per anchor ``b``::

    loss_b = -log  exp(s(a_b, p_b) / t) / (exp(s(a_b, p_b) / t) + sum_j exp(s(a_b, n_bj) / t))

computed as ``-log_softmax(logits)[0]`` for numerical stability. Unlike the classic in-batch InfoNCE,
the negatives are per anchor (``[n, k, d]``), which is what tuple disturbing needs.
"""
from __future__ import annotations

import torch

SIMILARITIES = ("cosine", "dot")
#: Smallest norm divided by in cosine similarity (F.normalize's default eps).
EPS = 1e-12


def tuple_infonce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, *,
                  temperature: float = 0.1, similarity: str = "cosine",
                  negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-anchor InfoNCE loss over (positive + negatives).

    Args:
        anchor: ``[n, d]``.
        positive: ``[n, d]``.
        negatives: ``[n, k, d]``.
        temperature: softmax temperature t > 0.
        similarity: "cosine" (embeddings L2-normalised first) or "dot".
        negative_mask: optional bool ``[n, k]``, False = ignore that negative (e.g. the -1 padding of
            :func:`mmdata.samplers.pairs.hard_negatives`).

    Returns:
        ``[n]`` loss per anchor (average it, or weight it, yourself); differentiable.

    Raises:
        ValueError: unknown similarity, non-positive temperature, or mismatched shapes.
    """
    if similarity not in SIMILARITIES or temperature <= 0:
        raise ValueError(f"similarity must be one of {SIMILARITIES} and temperature > 0, got "
                         f"{similarity!r}, {temperature}")
    if anchor.shape != positive.shape or negatives.shape[::2] != anchor.shape:
        raise ValueError(f"need anchor, positive [n, d] and negatives [n, k, d]; got {tuple(anchor.shape)}, "
                         f"{tuple(positive.shape)}, {tuple(negatives.shape)}")
    # Fewest passes over negatives [n, k, d] (the only large input): one product and, for cosine, one squared
    # norm; scaling the small [n, k] logits instead of normalising every negative is 2x faster forward and
    # 2-4x faster backward than F.normalize + einsum (bench/samplers.py), with the same values up to rounding.
    if similarity == "cosine":
        anchor = anchor * (_inverse_norm(anchor) / temperature).unsqueeze(-1)
    else:
        anchor = anchor / temperature
    # [n, 1, d] @ [n, d, k]: a batched row-times-matrix; the [n, k, d] @ [n, d, 1] form runs 8x slower on CPU.
    neg = torch.bmm(anchor.unsqueeze(1), negatives.transpose(1, 2)).squeeze(1)  # [n, k]
    pos = (anchor * positive).sum(-1)  # [n]
    if similarity == "cosine":
        neg, pos = neg * _inverse_norm(negatives), pos * _inverse_norm(positive)
    if negative_mask is not None:
        neg = neg.masked_fill(~negative_mask.to(neg.device, torch.bool), float("-inf"))
    return -torch.log_softmax(torch.cat([pos.unsqueeze(1), neg], dim=1), dim=1)[:, 0]


def _inverse_norm(x: torch.Tensor) -> torch.Tensor:
    """``1 / max(||x||, EPS)`` over the last axis (``[...]``), as F.normalize's eps; its gradient is cheaper than
    ``linalg.vector_norm``'s, and clamping the squared norm keeps it finite (0, not NaN) at zero vectors."""
    return (x * x).sum(-1).clamp_min(EPS * EPS).rsqrt()
