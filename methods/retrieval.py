"""Unimodal-query retrieval from fused embeddings (ReFNet's Table 1 and Table 7; ../shared/methods.md 1.4).

The memory bank holds one (key, value) pair per sample: the fused embedding of the full input and the sample's
target. The query for field i is the zero-padded unimodal input of the fusion: ``fusion({i: z_i, j: 0 for the
other fields})``, with z_i the field's encoder output. A query scores a hit at k when one of its k nearest keys
(cosine similarity) holds a value equal to its own target. A model that keeps more unimodal information in its
fused embedding (ReFNet's claim) retrieves better from one modality.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Queries scored against the whole bank at a time: bounds the [chunk, N] similarity matrix in memory.
CHUNK = 1024


@torch.no_grad()
def bank(model: nn.Module, batches: Iterable[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                        torch.Tensor]:
    """Keys, zero-padded unimodal queries and targets of every sample of ``batches``, in eval mode.

    Args:
        model: has ``encode(batch) -> {field: [B, dim]}``, ``fusion({field: [B, dim]}) -> [B, hidden]``,
            ``fields`` and ``label_name`` (a late-fusion model or a ReFNet; for another wrapper pass its base).
        batches: batch dicts with the model's input fields and label.

    Returns:
        ``(keys [N, hidden], {field: queries [N, hidden]}, targets [N] or [N, C])``, keys and queries in float32.
    """
    was_training = model.training
    model.eval()
    keys, queries, targets = [], {n: [] for n in model.fields}, []
    try:
        for batch in batches:
            parts = model.encode(batch)
            keys.append(model.fusion(parts).float())
            for name in model.fields:
                padded = {n: z if n == name else torch.zeros_like(z) for n, z in parts.items()}
                queries[name].append(model.fusion(padded).float())
            targets.append(torch.as_tensor(batch[model.label_name]).to(keys[-1].device))
    finally:
        model.train(was_training)
    if not keys:
        raise ValueError("unimodal_retrieval: the batches yielded no samples")
    return torch.cat(keys), {n: torch.cat(q) for n, q in queries.items()}, torch.cat(targets)


def hits_at(queries: torch.Tensor, keys: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Top-k hit rate of query i against all keys, where query i's own target is ``targets[i]``.

    Args:
        queries: [N, H]; query i belongs to sample i.
        keys: [N, H]; key j belongs to sample j (sample i's own key included: the bank is the whole set).
        targets: [N] class ids or [N, C] label vectors (a hit needs the whole vector equal).
        ks: the k values; a k above N counts as N.

    Returns:
        ``{k: fraction of queries with a hit among their k nearest keys}`` (plain floats in [0, 1]).
    """
    keys = F.normalize(keys, dim=1)
    top = min(max(ks), len(keys))
    first_hit = []  # per query, the rank (0-based) of its first hit, or ``top`` when none in the top ``top``
    for start in range(0, len(queries), CHUNK):
        q = F.normalize(queries[start:start + CHUNK], dim=1)
        nearest = (q @ keys.T).topk(top, dim=1).indices  # [chunk, top]
        same = targets[nearest] == targets[start:start + CHUNK, None]
        same = same.flatten(2).all(dim=2) if targets.dim() > 1 else same  # multi-hot: the whole vector
        ranks = torch.where(same, torch.arange(top, device=same.device), top)
        first_hit.append(ranks.amin(dim=1))
    first = torch.cat(first_hit)
    return {k: float((first < min(k, top)).double().mean()) for k in ks}


def unimodal_retrieval(model: nn.Module, batches: Iterable[dict[str, Any]], *,
                       ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """ReFNet's unimodal-query kNN retrieval: for each input field, the top-k hit rate of its zero-padded
    unimodal queries against the fused embeddings of all samples of ``batches``.

    The bank is the evaluated set itself, so each query's own sample is one of the keys (as when the paper
    stores the test set's embeddings in a bank and queries it with the same test samples); a query padded to
    one field still differs from its full-input key, so its own key is not guaranteed to be the nearest.

    Args:
        model: a model with ``encode``, ``fusion``, ``fields``, ``label_name`` and ``task`` (LateFusion and
            ReFNet models have them).
        batches: batch dicts; every sample is both a query (one per field) and a key.
        ks: the k values (positive; a k above the number of samples counts as all of them).

    Returns:
        ``{f"retrieval_{field}_top{k}": float}``: fractions in [0, 1] (the paper prints percentages).

    Raises:
        ValueError: a regression model (a hit needs a target equal to the query's, i.e. classes), a k < 1, or
            empty batches.
    """
    if getattr(model, "task", None) == "regression":
        raise ValueError("unimodal_retrieval needs class or multi-hot targets; the model's task is regression")
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    keys, queries, targets = bank(model, batches)
    return {f"retrieval_{name}_top{k}": rate for name, q in queries.items()
            for k, rate in hits_at(q, keys, targets, ks).items()}
