"""The tuple contrastive loss: InfoNCE of each anchor against its positive and its own negatives.

TupleInfoNCE (Liu et al. 2021, eq. 2) scores a fused anchor embedding against the fused embedding of its
positive (an augmented view) and of its k negatives (e.g. disturbed tuples); per anchor ``b``::

    loss_b = -log  exp(s(a_b, p_b) / t) / (exp(s(a_b, p_b) / t) + sum_j exp(s(a_b, n_bj) / t))

computed as ``-log_softmax(logits)[0]`` for numerical stability. Unlike the classic in-batch InfoNCE,
the negatives are per anchor (``[n, k, d]``), which is what tuple disturbing needs.

On CPU (float32, float64) the loss runs as one fused kernel per direction (:mod:`mmdata.samplers.fused_loss`);
elsewhere, and with ``kernel="torch"``, as the composed torch form below. Both compute the same values up to float
rounding (tests/test_fused_loss.py).
"""
from __future__ import annotations

import torch

from mmdata.samplers import fused_loss

SIMILARITIES = ("cosine", "dot")
#: ``kernel`` values: "auto" = fused where :func:`mmdata.samplers.fused_loss.applies`, else torch.
KERNELS = ("auto", "fused", "torch")
#: Smallest norm divided by in cosine similarity (F.normalize's default eps).
EPS = 1e-12


def tuple_infonce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, *,
                  temperature: float = 0.1, similarity: str = "cosine",
                  negative_mask: torch.Tensor | None = None, kernel: str = "auto") -> torch.Tensor:
    """Per-anchor InfoNCE loss over (positive + negatives).

    Args:
        anchor: ``[n, d]``.
        positive: ``[n, d]``.
        negatives: ``[n, k, d]``.
        temperature: softmax temperature t > 0.
        similarity: "cosine" (embeddings L2-normalised first) or "dot".
        negative_mask: optional bool ``[n, k]``, False = ignore that negative (e.g. the -1 padding of
            :func:`mmdata.samplers.pairs.hard_negatives`).
        kernel: "auto", "fused" (CPU float32/float64 only) or "torch". The fused kernel is differentiable once;
            take "torch" for second derivatives (e.g. a gradient penalty through the loss).

    Returns:
        ``[n]`` loss per anchor (average it, or weight it, yourself); differentiable.

    Raises:
        ValueError: unknown similarity or kernel, non-positive temperature, mismatched shapes (a mask that does
            not broadcast to ``[n, k]`` included), or "fused" on tensors it cannot run on.
    """
    if similarity not in SIMILARITIES or temperature <= 0:
        raise ValueError(f"similarity must be one of {SIMILARITIES} and temperature > 0, got "
                         f"{similarity!r}, {temperature}")
    if anchor.shape != positive.shape or negatives.dim() != 3 or negatives.shape[::2] != anchor.shape:
        raise ValueError(f"need anchor, positive [n, d] and negatives [n, k, d]; got {tuple(anchor.shape)}, "
                         f"{tuple(positive.shape)}, {tuple(negatives.shape)}")
    if negative_mask is not None and _broadcast(negative_mask.shape, negatives.shape[:2]) != negatives.shape[:2]:
        raise ValueError(f"negative_mask must broadcast to [n, k] = {list(negatives.shape[:2])}; got "
                         f"{list(negative_mask.shape)}")
    fusable = fused_loss.applies(anchor, positive, negatives)
    if kernel not in KERNELS or (kernel == "fused" and not fusable):
        raise ValueError(f"kernel must be one of {KERNELS} (\"fused\" needs CPU tensors of one dtype in "
                         f"{fused_loss.DTYPES}); got {kernel!r} on {anchor.device} {anchor.dtype}")
    if fusable and kernel != "torch":
        return fused_loss.tuple_infonce_fused(anchor, positive, negatives, negative_mask, temperature=temperature,
                                              cosine=similarity == "cosine", eps=EPS)
    # Two passes over negatives [n, k, d] (the only large input): one product, one norm (cosine). Scaling the small
    # [n, 1 + k] logits instead of normalising every negative is 2x faster forward and 2-4x faster backward than
    # F.normalize + einsum; fused kernels (vector_norm, vecdot, log_softmax) over a product and a sum each cut
    # the forward by a further quarter (bench/samplers.py), with the same values up to rounding.
    # [n, 1, d] @ [n, d, k]: a batched row-times-matrix; the [n, k, d] @ [n, d, 1] form runs 8x slower on CPU.
    neg = torch.bmm(anchor.unsqueeze(1), negatives.transpose(1, 2)).squeeze(1)  # [n, k]
    logits = torch.cat([torch.linalg.vecdot(anchor, positive).unsqueeze(1), neg], dim=1)  # [n, 1 + k]
    if similarity == "cosine":  # each norm at least EPS, as F.normalize; a zero vector then scores 0
        norms = torch.cat([_norm(positive).unsqueeze(1), _norm(negatives)], dim=1)  # [n, 1 + k]
        logits = logits / (norms * (_norm(anchor) * temperature).unsqueeze(1))
    else:
        logits = logits / temperature
    if negative_mask is not None:  # after scaling: -inf through the division would make its gradient NaN
        keep = torch.nn.functional.pad(negative_mask.to(logits.device, torch.bool), (1, 0), value=True)
        logits = logits.masked_fill(~keep, float("-inf"))
    return -torch.log_softmax(logits, dim=1)[:, 0]


def _broadcast(*shapes: torch.Size) -> torch.Size | None:
    """The shape ``shapes`` broadcast to, or None where they do not broadcast."""
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return None


def _norm(x: torch.Tensor) -> torch.Tensor:
    """``max(||x||, EPS)`` over the last axis (``[...]``), as F.normalize's eps; finite gradient (0) at zero."""
    return torch.linalg.vector_norm(x, dim=-1).clamp_min(EPS)
