"""Fusion modules: ``{field: [B, ..., d_field]} -> [B, ..., hidden]``, shared by every method.

Each entry of :data:`FUSIONS` is built as ``cls(dims, hidden, dropout)``, where ``dims`` maps the input field
names to their embedding sizes in fusion order, so a method that fuses picks any of them by name (the
``fusion`` option) and ReFNet- or Progressive-Fusion-style wrappers can wrap any of them.
"""
from __future__ import annotations

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
