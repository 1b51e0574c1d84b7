"""Fusion modules: ``{field: [B, ..., d_field]} -> [B, ..., hidden]``, shared by every method.

Each entry of :data:`FUSIONS` is built as ``cls(dims, hidden, dropout)``, where ``dims`` maps the input field
names to their embedding sizes in fusion order, so a method that fuses picks any of them by name (the
``fusion`` option) and ReFNet- or Progressive-Fusion-style wrappers can wrap any of them.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """Concatenate the per-field embeddings in a fixed order, then a one-hidden-layer MLP.

    Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden]. The order is the ``dims`` order given at
    build time, so it never depends on dict insertion order at call time.
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(dims)
        self.net = nn.Sequential(nn.Linear(sum(dims.values()), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        return self.net(torch.cat([parts[n] for n in self.names], dim=-1))


#: Fusion modules by name; each is built as ``cls(dims: dict[str, int], hidden, dropout)`` and maps
#: ``dict[str, Tensor [B, ..., d]] -> Tensor [B, ..., hidden]``.
FUSIONS: dict[str, type[nn.Module]] = {"concat": ConcatFusion}


def build_fusion(name: str, dims: dict[str, int], hidden: int, dropout: float = 0.0, **options) -> nn.Module:
    """``FUSIONS[name](dims, hidden, dropout, **options)`` with the name and options checked.

    Args:
        name: a key of :data:`FUSIONS`.
        dims: input field -> embedding size, in fusion order.
        hidden: the fused embedding size.
        dropout: dropout on the fused embedding.
        options: the fusion's keyword-only options (e.g. ``rank`` of ``lmf``); the ``fusion_options`` of a
            method's params block.

    Raises:
        ValueError: an unknown fusion or option (the message lists the known ones).
    """
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSIONS))}")
    known = {p.name for p in inspect.signature(FUSIONS[name]).parameters.values() if p.kind == p.KEYWORD_ONLY}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for fusion {name!r}; known: {sorted(known) or 'none'}")
    return FUSIONS[name](dims, hidden, dropout, **options)
