"""Early fusion (MultiBench's "EF"): the input fields joined into one input before a single encoder.

Fields join when their values line up element for element:

- fixed vectors [D_i] -> one vector [sum D_i];
- sequences [T, D_i] of one length T, or variable-length ones with the same length in every sample (checked per
  batch) -> one sequence [T, sum D_i] with the shared step mask;
- pictures of one size: [H, W] (one channel) and [H, W, C_i] -> one picture [H, W, sum C_i].

The joined input goes through the encoder :func:`methods.blocks.build_encoder` picks for it, then the one-hidden-
layer MLP of the ``concat`` fusion and the task head, so early and late fusion differ only in where the fields
meet. With one field it is that field's unimodal baseline (any encodable field). Inputs are joined as
:func:`methods.blocks.field_input` reads them (uint8 scaled to 0..1, other values as stored), so fields on very
different scales are best normalised at shard time. Anything else (text, fields of other kinds or sizes) is a
ValueError at build time that points to ``late_fusion``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.blocks import build_encoder, encoder_kind, field_input, label_field
from methods.fusions import FUSIONS
from methods.heads import REGRESSION_LOSSES, check_label, head_size, target, task_loss, task_of, task_pred, task_scores
from mmdata.types import Features, Field, Tuples

#: Name of the joined input per kind: the modality prefix makes build_encoder read a fixed [T, D] as a
#: sequence (``feat``) and an [H, W, C] array as a picture (``image``).
JOINED = {"vector": "feat_early", "sequence": "feat_early", "image": "image_early"}


def _cannot_join(features: Features, fields: list[str], why: str) -> ValueError:
    shapes = ", ".join(f"{n} {features[n].dtype} {list(features[n].shape)}" for n in fields)
    return ValueError(f"early_fusion cannot join fields {shapes}: {why}; use late_fusion (one encoder per field) "
                      f"for these fields")


def _kinds(features: Features, fields: list[str]) -> dict[str, str]:
    """Encoder kind of each field; a field no encoder reads is a join error naming it."""
    kinds = {}
    for n in fields:
        try:
            kinds[n] = encoder_kind(n, features[n])
        except ValueError as err:
            raise _cannot_join(features, fields, f"field {n!r} has no tensor encoder ({err})") from None
    return kinds


def joined_field(features: Features, fields: list[str]) -> tuple[str, Field]:
    """The (name, Field) of the single input the fields join into (a field itself when there is one).

    Raises:
        ValueError: the fields cannot be joined (naming them, their shapes and why, and suggesting late_fusion).
    """
    if len(fields) == 1:  # nothing to join: the field's own encoder (which raises if there is none)
        return fields[0], features[fields[0]]
    kinds = _kinds(features, fields)
    text = [n for n, k in kinds.items() if k == "text"]
    if text:
        raise _cannot_join(features, fields, f"{text} hold strings, which do not line up element for element")
    kind = next(iter(kinds.values()))
    if set(kinds.values()) != {kind} or kind not in JOINED:
        found = ", ".join(f"{n}: {k}" for n, k in kinds.items())
        raise _cannot_join(features, fields, f"only vectors, sequences or pictures of one kind join, got {found}")
    shapes = [features[n].shape for n in fields]
    if kind == "vector":
        return JOINED[kind], Field("float32", (sum(s[0] for s in shapes),), "npy")
    if kind == "sequence":
        if len({s[0] for s in shapes}) != 1:
            raise _cannot_join(features, fields, "sequences join only with one length T (all fixed and equal, or "
                                                 "all variable with equal lengths per sample)")
        return JOINED[kind], Field("float32", (shapes[0][0], sum(s[1] for s in shapes)), "npy")
    if len({s[:2] for s in shapes}) != 1:
        raise _cannot_join(features, fields, "pictures join only when they have the same height and width")
    channels = sum(s[2] if len(s) == 3 else 1 for s in shapes)
    return JOINED[kind], Field("float32", (*shapes[0][:2], channels), "npy")


class EarlyFusion(nn.Module):
    """Joined input -> one encoder -> MLP -> head; reads only its fields and moves them to its own device.

    Attributes:
        fields: the input field names, in join order.
        label_name: the batch key of the target.
        task: "classification" ([B, C] logits), "multilabel" ([B, C] logits) or "regression" ([B] values).
    """

    def __init__(self, features: Features, fields: list[str], dim: int, hidden: int, dropout: float,
                 sequence: str = "sequence", regression_loss: str = "l1", text_ngrams: int = 2) -> None:
        super().__init__()
        self.label_name, label = label_field(features)
        check_label("early_fusion", self.label_name, label)
        self.task, self.regression_loss = task_of(label), regression_loss
        self.fields = tuple(fields)
        self.features = {n: features[n] for n in self.fields}
        name, joined = joined_field(features, list(fields))
        self.kind = encoder_kind(name, joined)
        self.encoder = build_encoder(name, joined, dim, sequence, text_ngrams=text_ngrams)
        self.mlp = FUSIONS["concat"]({name: dim}, hidden, dropout)
        self.head = nn.Linear(hidden, head_size(label))

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs are moved)."""
        return next(self.parameters()).device

    def join(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor | None]:
        """The joined input [B, D] / [B, T, D] / [B, H, W, C] (a field itself when alone) and its mask [B, T].

        Raises:
            ValueError: variable-length fields whose lengths differ in a sample (naming its key).
        """
        inputs = [field_input(batch, n, self.features[n], self.device) for n in self.fields]
        if len(inputs) == 1:
            return inputs[0]
        xs = [x.unsqueeze(-1) if self.kind == "image" and x.dim() == 3 else x  # an [H, W] picture: one channel
              for x, _ in inputs]
        masks = [m for _, m in inputs]
        if masks[0] is None:
            return torch.cat(xs, dim=-1), None
        _check_lengths(batch, self.fields, masks)
        width = min(x.shape[1] for x in xs)  # >= every real length once the lengths agree
        return torch.cat([x[:, :width] for x in xs], dim=-1), masks[0][:, :width]

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Embedding [B, hidden] of a batch dict (the input of the head)."""
        x, mask = self.join(batch)
        return self.mlp({self.mlp.names[0]: self.encoder(x, mask)})

    def output(self, fused: torch.Tensor) -> torch.Tensor:
        """Head on an embedding [B, hidden]: logits [B, C] or values [B] (regression)."""
        out = self.head(fused)
        return out.squeeze(-1) if self.task == "regression" else out

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits [B, C] (classification, multilabel) or predicted values [B] (regression)."""
        return self.output(self.embed(batch))


def _check_lengths(batch: dict[str, Any], fields: tuple[str, ...], masks: list[torch.Tensor]) -> None:
    """Raise ValueError naming the first sample whose variable-length fields differ in length."""
    lengths = torch.stack([m.sum(dim=1) for m in masks])  # [fields, B]
    differ = (lengths != lengths[0]).any(dim=0)
    if bool(differ.any()):
        i = int(differ.nonzero()[0])
        key = batch.get("__key__", [f"row {j}" for j in range(len(differ))])[i]
        found = ", ".join(f"{n}: {int(n_steps)}" for n, n_steps in zip(fields, lengths[:, i]))
        raise ValueError(f"early_fusion joins sequences step by step, but sample {key!r} has lengths {found}; "
                         f"use late_fusion for fields of different lengths")


def build_model(
    features: Features,
    *,
    fields: list[str],
    dim: int = 64,
    hidden: int = 128,
    dropout: float = 0.1,
    sequence: str = "sequence",
    regression_loss: str = "l1",
    text_ngrams: int = 2,
) -> EarlyFusion:
    """An early-fusion model over ``fields`` of a corpus schema.

    Args:
        features: the corpus schema (must contain every name in ``fields`` and one label field).
        fields: input fields to join (see the module docstring); one name gives the unimodal baseline.
        dim: output size of the one encoder.
        hidden: embedding size after the MLP.
        dropout: dropout after the MLP.
        sequence: encoder for joined [T, D] inputs: "sequence" (masked mean+max pooling) or "gru".
        regression_loss: "l1" or "mse" (see :data:`methods.heads.REGRESSION_LOSSES`).
        text_ngrams: n-gram order of the text encoder (a single ``text*`` field only: text does not join).

    Raises:
        ValueError: empty or unknown ``fields``, fields that cannot be joined (naming them, their shapes and
            why), or a label that is not one class, a multi-hot vector or one value per sample.
    """
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name input fields of the corpus; unknown {missing}, known {sorted(features)}")
    if regression_loss not in REGRESSION_LOSSES:
        raise ValueError(f"unknown regression_loss {regression_loss!r}; known: {', '.join(REGRESSION_LOSSES)}")
    return EarlyFusion(features, list(fields), dim, hidden, dropout, sequence, regression_loss, text_ngrams)


def training_step(model: EarlyFusion, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """Loss and predictions for one batch (``tuples`` unused).

    Returns:
        ``{"loss": scalar, "pred": [B] or [B, C]}``: the task loss of :func:`methods.heads.task_loss` and
        detached predictions (class ids, 0/1 per class, or values).
    """
    out = model(batch).float()  # float: under fp16 autocast the loss must still be computed in fp32
    y = target(batch, model.label_name, model.task, model.device)
    return {"loss": task_loss(model.task, out, y, model.regression_loss), "pred": task_pred(model.task, out)}


@torch.no_grad()
def predict(model: EarlyFusion, batch: dict[str, Any]) -> torch.Tensor:
    """Scores without gradients: probabilities [B, C] (softmax or per-class sigmoid) or values [B]."""
    return task_scores(model.task, model(batch).float())


def embed(model: EarlyFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The embedding [B, hidden] (input of the head) for a batch."""
    return model.embed(batch)
