"""Late fusion (MultiBench's "LF"): one encoder per input field, concatenation, MLP head.

With a single field in ``fields`` it is the unimodal baseline of the same architecture, so unimodal and
multimodal runs differ only in the ``fields`` parameter.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.blocks import FUSIONS, build_encoder, field_input, label_field
from mmdata.types import Features, Tuples


class LateFusion(nn.Module):
    """Encoders for ``fields`` -> fusion -> head; reads only its fields and moves them to its own device.

    Attributes:
        fields: the input field names, in fusion order.
        label_name: the batch key of the target.
        task: "classification" (head outputs [B, C] logits) or "regression" (head output [B]).
    """

    def __init__(self, features: Features, fields: list[str], dim: int, hidden: int, dropout: float, fusion: str,
                 sequence: str = "sequence"):
        super().__init__()
        self.label_name, label = label_field(features)
        self.task = "classification" if label.classes else "regression"
        self.fields = tuple(fields)
        self.features = {n: features[n] for n in self.fields}
        self.encoders = nn.ModuleDict({n: build_encoder(n, features[n], dim, sequence) for n in self.fields})
        self.fusion = FUSIONS[fusion]({n: dim for n in self.fields}, hidden, dropout)
        self.head = nn.Linear(hidden, len(label.classes) if label.classes else 1)

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs are moved)."""
        return next(self.parameters()).device

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Fused embedding [B, hidden] of a batch dict."""
        parts = {n: self.encoders[n](*field_input(batch, n, self.features[n], self.device)) for n in self.fields}
        return self.fusion(parts)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits [B, C] (classification) or predicted values [B] (regression)."""
        out = self.head(self.embed(batch))
        return out if self.task == "classification" else out.squeeze(-1)


def build_model(
    features: Features,
    *,
    fields: list[str],
    dim: int = 64,
    hidden: int = 128,
    dropout: float = 0.1,
    fusion: str = "concat",
    sequence: str = "sequence",
) -> LateFusion:
    """A late-fusion model over ``fields`` of a corpus schema.

    Args:
        features: the corpus schema (must contain every name in ``fields`` and one label field).
        fields: input fields; one name gives the unimodal baseline.
        dim: per-field embedding size.
        hidden: fused embedding size.
        dropout: dropout after the fusion MLP.
        fusion: a key of ``methods.blocks.FUSIONS``.
        sequence: encoder for [T, D] fields: "sequence" (masked mean+max pooling, fast) or "gru".

    Raises:
        ValueError: empty or unknown ``fields``, an unknown fusion, or a field no encoder handles.
    """
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name input fields of the corpus; unknown {missing}, known {sorted(features)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; known: {', '.join(sorted(FUSIONS))}")
    return LateFusion(features, list(fields), dim, hidden, dropout, fusion, sequence)


def _target(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The batch's labels on the model's device: int64 [B] or float32 [B]."""
    y = batch[model.label_name].to(model.device, non_blocking=True)
    return y.long() if model.task == "classification" else y.float()


def training_step(model: LateFusion, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """Loss and predictions for one batch (``tuples`` unused: late fusion needs no negatives).

    Returns:
        ``{"loss": scalar, "pred": [B]}``: cross-entropy and class ids, or L1 loss (as MMSA and MultiBench
        train MOSI/MOSEI regression) and predicted values; ``pred`` is detached.
    """
    out = model(batch).float()  # float: under fp16 autocast the loss must still be computed in fp32
    y = _target(model, batch)
    if model.task == "classification":
        return {"loss": F.cross_entropy(out, y), "pred": out.argmax(dim=-1).detach()}
    return {"loss": F.l1_loss(out, y), "pred": out.detach()}


@torch.no_grad()
def predict(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """Predicted class ids (int64 [B]) or values (float32 [B]) for a batch, without gradients."""
    out = model(batch).float()
    return out.argmax(dim=-1) if model.task == "classification" else out


def embed(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The fused embedding [B, hidden] (input of the head) for a batch."""
    return model.embed(batch)
