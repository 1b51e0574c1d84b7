"""The base model inside a Progressive Fusion model, for the zero-context check (methods.md 2.5, P2).

:func:`base_model` rebuilds 𝓕, the LateFusion on the original schema whose weights a
:class:`~methods.profusion.ProFusion` holds (the context's extra input columns and fusion inputs dropped), and
:func:`zero_context_difference` measures max |ProFusion(x) - 𝓕(x)| with c = 0, which the paper requires to be 0.
The identity needs a linear first layer where the context joins: every encoder input here, and every fusion
input but ``gmu``'s, which batch-normalises its inputs; once its running mean of the context columns moves
(training with W != 0), BN(0) != 0 and ``gmu`` with ``join_layer="embedding"`` and ``join="concat"`` is no
longer its base model at W = 0.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from methods import late_fusion
from methods.blocks import field_input

# ``model`` is a methods.profusion.ProFusion throughout; annotated as nn.Module because that module imports this one.
ProFusion = nn.Module


def fresh_base(model: ProFusion) -> late_fusion.LateFusion:
    """A LateFusion with ``model``'s options on the original schema; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        schema = {**model.features, model.label_name: model.label}
        return late_fusion.build_model(schema, fields=list(model.fields), **model.options)


def _fusion_keep_masks(model: ProFusion) -> list[torch.Tensor]:
    """Bool masks [n_wide], one per candidate layout, of the entries of a fusion parameter's axis that are the
    base fields' rather than the context's: per field the block [(1 ;) z_j ; W_j c] (TFN / LMF put the 1 first),
    the axis spanning one block, all blocks in fusion order, or their outer product (TFN, field 1 outermost)."""
    grow = [model.context_dims[n] if model.join == "concat" and model.join_layers[n] == "embedding" else 0
            for n in model.fields]
    masks = []
    for one in (0, 1):
        blocks = [torch.tensor([True] * (one + model.options["dim"]) + [False] * g) for g in grow]
        outer = blocks[0]
        for block in blocks[1:]:
            outer = (outer[:, None] & block[None, :]).flatten()
        masks += [*blocks, torch.cat(blocks), outer]
    return masks


def _narrow(model: ProFusion, key: str, wide: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The base model's entry ``key`` of ``shape`` from ProFusion's wider one: the context's columns dropped."""
    axes = [i for i, (a, b) in enumerate(zip(wide.shape, shape)) if a != b]
    if not axes:
        return wide.clone()
    if len(axes) > 1 or wide.dim() != len(shape):
        raise ValueError(f"cannot map {key} {tuple(wide.shape)} onto the base model's {tuple(shape)}")
    axis = axes[0]
    if key.startswith("encoders."):  # input join: the context columns / channels come last on the input axis
        return wide.narrow(axis, 0, shape[axis]).clone()
    found = [m for m in _fusion_keep_masks(model) if len(m) == wide.shape[axis] and int(m.sum()) == shape[axis]]
    if not found or any(not torch.equal(m, found[0]) for m in found):
        raise ValueError(f"cannot tell which entries of {key} {tuple(wide.shape)} are the base fusion's")
    return wide.index_select(axis, found[0].nonzero().squeeze(1).to(wide.device)).clone()


def base_model(model: ProFusion) -> late_fusion.LateFusion:
    """The base model 𝓕 whose weights ProFusion holds: a LateFusion on the original schema carrying ProFusion's
    encoders, fusion and head, minus the context's extra input columns / fusion inputs (a copy, with the same
    device, dtype and train/eval mode). With c = 0 its output equals ProFusion's (P2)."""
    base = fresh_base(model).to(model.device, next(model.parameters()).dtype)
    wide = model.base.state_dict()
    base.load_state_dict({k: _narrow(model, k, wide[k], v.shape) for k, v in base.state_dict().items()})
    return base.train(model.training)


def _base_output(base: late_fusion.LateFusion, batch: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    """``base(batch)`` with the inputs cast to ``dtype`` (LateFusion.forward reads them as float32)."""
    parts = {}
    for n in base.fields:
        x, mask = field_input(batch, n, base.features[n], base.device)
        parts[n] = base.encoders[n](x.to(dtype) if torch.is_tensor(x) else x, mask)
    return base.output(base.fusion(parts))


@torch.no_grad()
def zero_context_difference(model: ProFusion, batch: dict[str, Any], *, zero_back: bool = True,
                            dtype: torch.dtype = torch.float64) -> float:
    """P2 (methods.md 2.5): max |ProFusion(x) - 𝓕(x)| over a batch, 𝓕 = :func:`base_model`, both in eval mode.

    Args:
        model: left untouched (a copy is changed).
        zero_back: set every W_j to 0 first (the check for any R); False compares the model as it is, which
            is the check for ``steps == 1``.
        dtype: the precision of both copies. float64 (default) checks the identity itself; in float32 the
            two differ by rounding alone (kernels sum a widened first layer in another order), up to ~6e-8 at init.

    Returns:
        The largest absolute difference of the outputs (logits or values); the paper requires 0 (<= 1e-7).
    """
    pro = copy.deepcopy(model).eval().to(dtype)
    if zero_back:
        for w in pro.back.values():
            w.weight.zero_()
    return float((pro(batch) - _base_output(base_model(pro).eval(), batch, dtype)).abs().max())
