"""The tuple contrastive loss: InfoNCE of each anchor against its positive and its own negatives.

TupleInfoNCE (Liu et al. 2021, eq. 2) scores a fused anchor embedding against the fused embedding of its
positive (an augmented view) and of its k negatives (e.g. disturbed tuples); per anchor ``b``::

    loss_b = -log  exp(s(a_b, p_b) / t) / (exp(s(a_b, p_b) / t) + sum_j exp(s(a_b, n_bj) / t))

computed as ``logsumexp(logits) - logits[0]`` for numerical stability. Unlike the classic in-batch InfoNCE,
the negatives are per anchor (``[n, k, d]``), which is what tuple disturbing needs.
"""
from __future__ import annotations

import torch

SIMILARITIES = ("cosine", "dot")


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
    if similarity == "cosine":
        anchor, positive, negatives = (torch.nn.functional.normalize(x, dim=-1)
                                       for x in (anchor, positive, negatives))
    pos = (anchor * positive).sum(-1, keepdim=True)  # [n, 1]
    neg = torch.einsum("nd,nkd->nk", anchor, negatives)  # [n, k]
    if negative_mask is not None:
        neg = neg.masked_fill(~negative_mask.to(neg.device, torch.bool), float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]
