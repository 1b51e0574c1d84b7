"""Progressive Fusion (``profusion``, seed 001 App. E-F; ../shared/methods.md 2.1): late fusion with feedback.

Wraps (does not copy) a base model 𝓕(x) = P(F(G_1(x_1), ..., G_K(x_K))), a :class:`~methods.late_fusion.LateFusion`
with any fusion of ``FUSIONS``: a bias-free linear W_j back-projects the fused context c into field j,
Ĝ_j(x_j, c) = G_j([x_j ; W_j c]) (``join="concat"``, the paper's text) or G_j(x_j + W_j c) (``"add"``, its Eq. 7),
unrolled for R = ``steps`` passes with shared weights: c_0 = 0, c_t = F(Ĝ_1(x_1, c_{t-1}), ...), Ŷ = P(c_R).
With no bias, c = 0 gives W_j c = 0, so R = 1 (or W ≡ 0) *is* the base model (P2, :func:`zero_context_difference`;
the appendix pseudo-code's W leaks its bias into the zero vector). ``join_layer`` "input" (B.1) widens the field's
last axis ([D] -> [D + d], [T, D] -> [T, D + d], [H, W] -> [H, W, 1 + d], [H, W, C] -> [H, W, C + d], video
channels), so G_j's first layer takes d extra columns / channels; "embedding" joins at the encoder output (the
fusion's input). Text strings have no input tensor and must join at the embedding.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from methods import late_fusion
from methods.blocks import encoder_kind, field_input, label_field
from methods.fusions import build_fusion
from methods.heads import target, task_loss, task_pred, task_scores
# P2 tooling lives beside this module (300-line rule); re-exported so that callers need only methods.profusion.
from methods.profusion_base import base_model, fresh_base, zero_context_difference
from mmdata.types import Features, Field, Tuples

JOINS = ("concat", "add")
JOIN_LAYERS = ("input", "embedding")
#: Encoder kinds whose input tensor has a feature/channel last axis the context can widen.
_INPUT_KINDS = ("vector", "sequence", "image", "video")


def _is_plane(field: Field, kind: str) -> bool:
    """A channel-less picture [H, W]: the context joins as extra channels after a new channel axis."""
    return kind == "image" and len(field.shape) == 2


def _input_width(name: str, field: Field) -> int:
    """Width of the axis the context joins at the input: D of [D] / [T, D], channels of pictures and video."""
    kind = encoder_kind(name, field)
    if kind not in _INPUT_KINDS:
        raise ValueError(f"field {name!r} ({kind} encoder) has no input tensor to join the context to; use "
                         f"join_layer='embedding' or join_layer={{{name!r}: 'embedding'}}")
    return 1 if _is_plane(field, kind) else field.shape[-1]


def widen(name: str, field: Field, extra: int) -> Field:
    """The schema of field ``name`` after ``extra`` context columns/channels join its last axis (float32)."""
    kind = encoder_kind(name, field)
    shape = (*field.shape, 1 + extra) if _is_plane(field, kind) else (*field.shape[:-1], field.shape[-1] + extra)
    return replace(field, dtype="float32", shape=shape)


def join_context(x: torch.Tensor, ctx: torch.Tensor, join: str) -> torch.Tensor:
    """Join a context [B, d] to x [B, ..., F] along the last axis, broadcast over time / space.

    Returns:
        [B, ..., F + d] (``"concat"``) or [B, ..., F] (``"add"``, d == F).
    """
    ctx = ctx.reshape(ctx.shape[0], *([1] * (x.dim() - 2)), ctx.shape[-1])
    if join == "add":
        return x + ctx
    return torch.cat([x, ctx.expand(*x.shape[:-1], ctx.shape[-1])], dim=-1)


class ProFusion(nn.Module):
    """A LateFusion ``base`` (widened where the context joins) unrolled ``steps`` times with back-projections.

    Attributes:
        base: the wrapped LateFusion: its encoders, fusion and head are the ones used at every step.
        back: W_j per field, bias-free ``nn.Linear(hidden, d_j)``.
        features, fields, label_name, task, regression_loss: as in LateFusion (the original schema).
        context_dims: d_j per field; join_layers: "input" or "embedding" per field.
    """

    def __init__(self, features: Features, fields: list[str], options: dict[str, Any], *, steps: int, join: str,
                 join_layers: dict[str, str], context_dims: dict[str, int], per_step_loss: bool) -> None:
        super().__init__()
        self.label_name, self.label = label_field(features)
        self.fields = tuple(fields)
        self.features = {n: features[n] for n in self.fields}
        self.options, self.steps, self.join, self.per_step_loss = dict(options), steps, join, per_step_loss
        self.join_layers, self.context_dims = join_layers, context_dims
        grow = {n: context_dims[n] if join == "concat" else 0 for n in self.fields}
        self._planes = {n for n in self.fields if _is_plane(features[n], encoder_kind(n, features[n]))}
        widened = {n for n in self.fields if join == "concat" and join_layers[n] == "input"}
        wide = {n: widen(n, f, grow[n]) if n in widened else f for n, f in features.items()}
        self.base = late_fusion.build_model(wide, fields=list(fields), **options)
        if join == "concat" and "embedding" in join_layers.values():  # the fusion sees [z_j ; W_j c]
            dims = {n: options["dim"] + (grow[n] if join_layers[n] == "embedding" else 0) for n in self.fields}
            self.base.fusion = build_fusion(options["fusion"], dims, options["hidden"], options["dropout"],
                                            **(options["fusion_options"] or {}))
        self.back = nn.ModuleDict({n: nn.Linear(options["hidden"], context_dims[n], bias=False) for n in fields})
        self.task, self.regression_loss = self.base.task, self.base.regression_loss

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs are moved)."""
        return next(self.parameters()).device

    def _step(self, inputs: dict[str, tuple[Any, torch.Tensor | None]], c: torch.Tensor) -> torch.Tensor:
        """One pass: c_{t-1} [B, hidden] -> c_t = F(Ĝ_1(x_1, c_{t-1}), ...) [B, hidden]."""
        parts = {}
        for n in self.fields:
            (x, mask), ctx = inputs[n], self.back[n](c)
            if self.join_layers[n] == "input":
                plane = n in self._planes
                x = join_context(x.unsqueeze(-1) if plane else x, ctx, self.join)
                x = x.squeeze(-1) if plane and self.join == "add" else x
            z = self.base.encoders[n](x, mask)
            parts[n] = join_context(z, ctx, self.join) if self.join_layers[n] == "embedding" else z
        return self.base.fusion(parts)

    def contexts(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """The fused embeddings c_1, ..., c_R, each [B, hidden], of a batch dict (c_0 = 0 not included)."""
        dtype = self.back[self.fields[0]].weight.dtype  # float32 unless the model was cast (P2 in float64)
        inputs = {n: field_input(batch, n, self.features[n], self.device) for n in self.fields}
        inputs = {n: (x.to(dtype) if torch.is_tensor(x) else x, m) for n, (x, m) in inputs.items()}
        size = len(next(iter(inputs.values()))[0])  # B, from a tensor [B, ...] or a list of B strings
        c = torch.zeros(size, self.options["hidden"], device=self.device, dtype=dtype)
        out = []
        for _ in range(self.steps):
            c = self._step(inputs, c)
            out.append(c)
        return out

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """The final fused embedding c_R [B, hidden] (the input of the head)."""
        return self.contexts(batch)[-1]

    def outputs(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """The head on every step, P(c_1), ..., P(c_R): logits [B, C] or values [B] each."""
        return [self.base.output(c) for c in self.contexts(batch)]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Ŷ = P(c_R): logits [B, C] (classification, multilabel) or predicted values [B] (regression)."""
        return self.base.output(self.embed(batch))


def _join_layers(fields: list[str], join_layer: str | dict[str, str]) -> dict[str, str]:
    """``join_layer`` as one layer per field (a dict names only the fields not joining at the input)."""
    layers = {n: "input" for n in fields}
    layers.update({n: join_layer for n in fields} if isinstance(join_layer, str) else join_layer)
    bad = {n: v for n, v in layers.items() if n not in fields or v not in JOIN_LAYERS}
    if bad:
        raise ValueError(f"join_layer must be one of {JOIN_LAYERS} or a dict field -> one of them over the fields "
                         f"{list(fields)}; got {bad}")
    return layers


def _context_dims(features: Features, layers: dict[str, str], join: str, context_dim: int | None,
                  dim: int) -> dict[str, int]:
    """d_j per field: ``context_dim``, or by default (and always for ``"add"``) the width joined to."""
    dims = {}
    for n, layer in layers.items():
        width = _input_width(n, features[n]) if layer == "input" else dim
        if join == "add" and context_dim not in (None, width):
            raise ValueError(f"join='add' needs context_dim None or the width of field {n!r} at its "
                             f"{layer} ({width}), got {context_dim}; use join='concat' for another width")
        dims[n] = width if context_dim is None else context_dim
    return dims


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
    steps: int = 2,
    join: str = "concat",
    join_layer: str | dict[str, str] = "input",
    context_dim: int | None = None,
    per_step_loss: bool = False,
) -> ProFusion:
    """Progressive Fusion over a late-fusion model of ``fields`` (see the module docstring).

    Args:
        features, fields, dim, hidden, dropout, fusion, fusion_options, sequence, regression_loss, text_ngrams:
            the base model's options (:func:`methods.late_fusion.build_model`).
        steps: R, the number of forward passes (c_0 = 0; 1 is exactly the base model; the paper's "unrolled
            once" is 2).
        join: "concat" ([x_j ; W_j c], the paper's text) or "add" (x_j + W_j c, its Eq. 7).
        join_layer: "input" (the field's input tensor; B.1), "embedding" (the encoder output, i.e. the fusion's
            input), or a dict field -> layer (unnamed fields join at the input; text fields need "embedding").
        context_dim: d_j, the width of W_j c for "concat"; None = the width joined to (D of [D] / [T, D] inputs,
            channels of pictures, ``dim`` at the embedding). "add" always uses that width.
        per_step_loss: average the task loss over the R outputs P(c_1), ..., P(c_R) instead of P(c_R) only.

    Raises:
        ValueError: unknown fields, a bad option (the message names the valid choices), or a field that
            cannot take the context at its input.
    """
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name input fields of the corpus; unknown {missing}, known {sorted(features)}")
    for name, value in (("steps", steps), ("context_dim", 1 if context_dim is None else context_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1{' or None' * (name == 'context_dim')}, got {value!r}")
    if join not in JOINS:
        raise ValueError(f"unknown join {join!r}; known: {', '.join(JOINS)}")
    layers = _join_layers(list(fields), join_layer)
    options = {"dim": dim, "hidden": hidden, "dropout": dropout, "fusion": fusion, "fusion_options": fusion_options,
               "sequence": sequence, "regression_loss": regression_loss, "text_ngrams": text_ngrams}
    return ProFusion(features, list(fields), options, steps=steps, join=join, join_layers=layers,
                     context_dims=_context_dims(features, layers, join, context_dim, dim),
                     per_step_loss=bool(per_step_loss))


def training_step(model: ProFusion, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """Task loss on the final output (or averaged over the R outputs with ``per_step_loss``); ``tuples`` unused.

    Returns:
        ``{"loss": scalar, "pred": [B] or [B, C] detached (from P(c_R))}``, plus ``"final_loss"`` (the loss of
        P(c_R), detached) when ``per_step_loss`` is on.
    """
    outs = model.outputs(batch) if model.per_step_loss else [model(batch)]
    y = target(batch, model.label_name, model.task, model.device)
    # float: under fp16 autocast the loss must still be computed in fp32
    losses = [task_loss(model.task, out.float(), y, model.regression_loss) for out in outs]
    result = {"loss": torch.stack(losses).mean(), "pred": task_pred(model.task, outs[-1].float())}
    if model.per_step_loss:
        result["final_loss"] = losses[-1].detach()
    return result


@torch.no_grad()
def predict(model: ProFusion, batch: dict[str, Any]) -> torch.Tensor:
    """Scores of P(c_R) without gradients: probabilities [B, C] (softmax / sigmoid) or values [B]."""
    return task_scores(model.task, model(batch).float())


def embed(model: ProFusion, batch: dict[str, Any]) -> torch.Tensor:
    """The final fused embedding c_R [B, hidden] for a batch."""
    return model.embed(batch)


def parameter_overhead(model: ProFusion) -> dict[str, int | float]:
    """Parameter counts of the base model and of ProFusion (methods.md 2.1, Table 10 of the paper).

    Returns:
        ``{"base": n, "profusion": n, "overhead": profusion - base, "fraction": overhead / base}``, where base
        is the same LateFusion on the original schema. For the input join with concat the overhead is
        Σ_j d_j (|c| + h_j1): W_j's weights plus d_j extra input columns of G_j's first layer, whose
        weights per input column are h_j1 (its width for a linear layer, width x kernel area for a conv).
    """
    base = sum(p.numel() for p in fresh_base(model).parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"base": base, "profusion": total, "overhead": total - base, "fraction": (total - base) / base}
