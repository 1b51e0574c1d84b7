"""Late fusion (MultiBench's "LF"): one encoder per input field, concatenation, MLP head.

With a single field in ``fields`` it is the unimodal baseline of the same architecture, so unimodal and
multimodal runs differ only in the ``fields`` parameter.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.blocks import build_encoder, field_input, label_field
from methods.fusions import build_fusion
from methods.heads import REGRESSION_LOSSES, check_label, head_size, target, task_loss, task_of, task_pred, task_scores
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
                 sequence: str = "sequence", regression_loss: str = "l1", text_ngrams: int = 2,
                 fusion_options: dict[str, Any] | None = None):
        super().__init__()
        self.label_name, label = label_field(features)
        check_label("late_fusion", self.label_name, label)
        self.regression_loss = regression_loss
        self.task = task_of(label)
        self.fields = tuple(fields)
        self.features = {n: features[n] for n in self.fields}
        self.encoders = nn.ModuleDict({n: build_encoder(n, features[n], dim, sequence, text_ngrams=text_ngrams)
                                       for n in self.fields})
        self.fusion = build_fusion(fusion, {n: dim for n in self.fields}, hidden, dropout, **(fusion_options or {}))
        self.head = nn.Linear(hidden, head_size(label))

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs are moved)."""
        return next(self.parameters()).device

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Unimodal features ``{field: [B, dim]}`` of a batch dict (the encoders' outputs, fusion order)."""
        return {n: self.encoders[n](*field_input(batch, n, self.features[n], self.device)) for n in self.fields}

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Fused embedding [B, hidden] of a batch dict."""
        return self.fusion(self.encode(batch))

    def output(self, fused: torch.Tensor) -> torch.Tensor:
        """Head on a fused embedding [B, hidden]: logits [B, C] or values [B] (regression)."""
        out = self.head(fused)
        return out.squeeze(-1) if self.task == "regression" else out

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits [B, C] (classification, multilabel) or predicted values [B] (regression)."""
        return self.output(self.embed(batch))



class OverLateFusion(nn.Module):
    """A method's model built around a :class:`LateFusion` ``base`` (ReFNet, TupleInfoNCE): the base's
    attributes and its ``encode`` / ``embed`` / ``output`` / ``forward`` are delegated, so code written for a
    late-fusion model (``methods.retrieval``, the robustness evaluation, the heads) takes the wrapper as it is.
    Subclasses call ``super().__init__(base)`` and add their own modules.
    """

    def __init__(self, base: LateFusion) -> None:
        super().__init__()
        self.base = base

    fields = property(lambda self: self.base.fields, doc="The input field names, in fusion order.")
    features = property(lambda self: self.base.features, doc="The schema of the input fields.")
    label_name = property(lambda self: self.base.label_name, doc="The batch key of the target.")
    task = property(lambda self: self.base.task, doc='"classification", "multilabel" or "regression".')
    regression_loss = property(lambda self: self.base.regression_loss, doc="The base's regression loss name.")
    fusion = property(lambda self: self.base.fusion, doc="The base's fusion, {field: [B, dim]} -> [B, hidden].")
    device = property(lambda self: self.base.device, doc="The device of the parameters.")

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Unimodal features ``{field: [B, dim]}``."""
        return self.base.encode(batch)

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Fused embedding [B, hidden]."""
        return self.base.embed(batch)

    def output(self, fused: torch.Tensor) -> torch.Tensor:
        """The base head on a fused embedding [B, hidden]: logits [B, C] or values [B]."""
        return self.base.output(fused)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The base model's output: logits [B, C] or values [B]."""
        return self.base(batch)

def build_model(
    features: Features,
    *,
    fields: list[str],
    dim: int = 64,
    hidden: int = 128,
    dropout: float = 0.1,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
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
        fusion_options: that fusion's keyword options (``{"rank": 4}`` for ``lmf``, ``{"gate_input": "raw"}``
            for ``gmu``).
        sequence: encoder for [T, D] fields: "sequence" (masked mean+max pooling, fast) or "gru".
        regression_loss: "l1" (MMSA / MultiBench on MOSI, MOSEI) or "mse" (MultiBench's stocks examples).
        text_ngrams: word n-gram order of the hashed text encoder of ``text*`` fields (2: uni- and bigrams).

    Raises:
        ValueError: empty or unknown ``fields``, an unknown fusion, or a field no encoder handles.
    """
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name input fields of the corpus; unknown {missing}, known {sorted(features)}")
    if regression_loss not in REGRESSION_LOSSES:
        raise ValueError(f"unknown regression_loss {regression_loss!r}; known: {', '.join(REGRESSION_LOSSES)}")
    return LateFusion(features, list(fields), dim, hidden, dropout, fusion, sequence, regression_loss,
                      text_ngrams=text_ngrams, fusion_options=fusion_options)


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
    y = target(batch, model.label_name, model.task, model.device)
    return {"loss": task_loss(model.task, out, y, model.regression_loss), "pred": task_pred(model.task, out)}


@torch.no_grad()
def predict(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """Scores for a batch, without gradients.

    Returns:
        Class probabilities float32 [B, C] (softmax; classification: metrics take the argmax, and AUROC needs
        the scores), per-class probabilities [B, C] (sigmoid; multilabel) or values [B] (regression).
    """
    return task_scores(model.task, model(batch).float())


def embed(model: LateFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The fused embedding [B, hidden] (input of the head) for a batch."""
    return model.embed(batch)
