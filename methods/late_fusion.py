"""Late fusion (MultiBench's "LF"): one encoder per input field, concatenation, MLP head.

With a single field in ``fields`` it is the unimodal baseline of the same architecture, so unimodal and
multimodal runs differ only in the ``fields`` parameter.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.blocks import build_encoder, field_input, label_field
from methods.fusions import FUSIONS
from methods.losses import REGRESSION_LOSSES
from mmdata.types import Features, Tuples


class LateFusion(nn.Module):
    """Encoders for ``fields`` -> fusion -> head; reads only its fields and moves them to its own device.

    Attributes:
        fields: the input field names, in fusion order.
        label_name: the batch key of the target.
        task: "classification" (head outputs [B, C] logits), "multilabel" (a class label of shape [C], e.g.
            multi-hot genres: [B, C] logits, one sigmoid each) or "regression" (head output [B]).
    """

    def __init__(self, features: Features, fields: list[str], dim: int, hidden: int, dropout: float, fusion: str,
                 sequence: str = "sequence", regression_loss: str = "l1", text_ngrams: int = 2):
        super().__init__()
        self.label_name, label = label_field(features)
        self.regression_loss = regression_loss
        self.task = "regression" if not label.classes else "multilabel" if label.shape else "classification"
        self.fields = tuple(fields)
        self.features = {n: features[n] for n in self.fields}
        self.encoders = nn.ModuleDict({n: build_encoder(n, features[n], dim, sequence, text_ngrams=text_ngrams)
                                       for n in self.fields})
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
        """Logits [B, C] (classification, multilabel) or predicted values [B] (regression)."""
        out = self.head(self.embed(batch))
        return out.squeeze(-1) if self.task == "regression" else out


def build_model(
    features: Features,
    *,
    fields: list[str],
    dim: int = 64,
    hidden: int = 128,
    dropout: float = 0.1,
    fusion: str = "concat",
    sequence: str = "sequence",
    regression_loss: str = "l1",
    text_ngrams: int = 2,
) -> LateFusion:
    """A late-fusion model over ``fields`` of a corpus schema.

    Args:
        features: the corpus schema (must contain every name in ``fields`` and one label field).
        fields: input fields; one name gives the unimodal baseline.
        dim: per-field embedding size.
        hidden: fused embedding size.
        dropout: dropout after the fusion MLP.
        fusion: a key of ``methods.fusions.FUSIONS``.
        sequence: encoder for [T, D] fields: "sequence" (masked mean+max pooling, fast) or "gru".
        regression_loss: "l1" (MMSA / MultiBench on MOSI, MOSEI) or "mse" (MultiBench's stocks examples).
        text_ngrams: word n-gram order of the hashed text encoder of ``text*`` fields (2: uni- and bigrams).

    Raises:
        ValueError: empty or unknown ``fields``, an unknown fusion, or a field no encoder handles.
    """
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name input fields of the corpus; unknown {missing}, known {sorted(features)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; known: {', '.join(sorted(FUSIONS))}")
    if regression_loss not in REGRESSION_LOSSES:
        raise ValueError(f"unknown regression_loss {regression_loss!r}; known: {', '.join(REGRESSION_LOSSES)}")
    return LateFusion(features, list(fields), dim, hidden, dropout, fusion, sequence, regression_loss,
                      text_ngrams=text_ngrams)


def _target(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The batch's labels on the model's device: int64 [B], float32 multi-hot [B, C] or float32 [B]."""
    y = batch[model.label_name].to(model.device, non_blocking=True)
    return y.long() if model.task == "classification" else y.float()


def training_step(model: LateFusion, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """Loss and predictions for one batch (``tuples`` unused: late fusion needs no negatives).

    Returns:
        ``{"loss": scalar, "pred": [B] or [B, C]}``: cross-entropy and class ids; binary cross-entropy per
        class and 0/1 predictions at probability 0.5 [B, C] (multilabel, as MultiBench and MMBT train
        MM-IMDB); or the ``regression_loss`` (L1 by default, as MMSA and MultiBench train MOSI/MOSEI
        regression; MSE for the stocks) and predicted values.
        ``pred`` is detached.
    """
    out = model(batch).float()  # float: under fp16 autocast the loss must still be computed in fp32
    y = _target(model, batch)
    if model.task == "classification":
        return {"loss": F.cross_entropy(out, y), "pred": out.argmax(dim=-1).detach()}
    if model.task == "multilabel":
        return {"loss": F.binary_cross_entropy_with_logits(out, y), "pred": (out > 0).long().detach()}
    return {"loss": REGRESSION_LOSSES[model.regression_loss](out, y), "pred": out.detach()}


@torch.no_grad()
def predict(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """Scores for a batch, without gradients.

    Returns:
        Class probabilities float32 [B, C] (softmax; classification: metrics take the argmax, and AUROC needs
        the scores), per-class probabilities [B, C] (sigmoid; multilabel) or values [B] (regression).
    """
    out = model(batch).float()
    if model.task == "classification":
        return out.softmax(dim=-1)
    return out.sigmoid() if model.task == "multilabel" else out


def embed(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The fused embedding [B, hidden] (input of the head) for a batch."""
    return model.embed(batch)
