"""ReFNet and ReFNet_MS (Sankaran et al., "Multimodal Fusion Refiner Networks"; ../shared/methods.md section 1).

A base late-fusion model (:mod:`methods.late_fusion`, any fusion of :data:`methods.fusions.FUSIONS`) plus one
refiner decoder D_i per input field on the fused embedding F_emb. Each decoder reconstructs its field's unimodal
feature z_i (the base encoder's output; H_i = identity, as the paper does for Concat, Linear Sum and GMU):

    L = L_task + sum_i gamma_i C(D_i(F_emb), z_i) + ms_weight * L_MS(F_emb, labels)

with C one of :data:`methods.losses.REFINER_LOSSES` and L_MS :func:`methods.losses.multi_similarity_loss`
(``ms_weight > 0`` is ReFNet_MS). :func:`fit` first runs the optional self-supervised pretraining (the refiner
cost alone, no labels read; Algorithm 1), then the supervised phase. The decoders are dropped at inference:
:func:`predict` and :func:`embed` use only the base model.

Where MMF (the reference code) differs, on purpose: the decoders are registered (``nn.ModuleDict``; MMF keeps
them in a plain dict, so they are never trained), gamma weights every refiner loss kind (MMF ignores it for the
contrastive one), and the multi-hot MS positives share a label with their own anchor (MMF compares with row 0).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from methods import late_fusion
from methods.heads import target, task_loss, task_pred
from methods.late_fusion import LateFusion, OverLateFusion
from methods.loop import TupleSampler, train
from methods.losses import REFINER_LOSSES, multi_similarity_loss
from mmdata.types import Features, Tuples


def _decoder(hidden: int, dim: int, dropout: float) -> nn.Sequential:
    """D_i: "an MLP with a hidden layer" [P 4.1], [B, hidden] -> [B, dim]; the hidden block is MMF's
    Linear-ReLU-LayerNorm-Dropout, then a Linear to the target size."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Dropout(dropout),
                         nn.Linear(hidden, dim))


class ReFNet(OverLateFusion):
    """A :class:`~methods.late_fusion.LateFusion` base plus refiner decoders; what a late-fusion model offers is
    delegated to the base (:class:`~methods.late_fusion.OverLateFusion`).

    Attributes:
        base: the late-fusion model; the only part used at inference.
        decoders: ``nn.ModuleDict`` field -> D_i, [B, hidden] -> [B, dim], one per field.
        refiner_weight: ``{field: gamma_i}`` for every field (0 switches a field's refiner off).
        refiner_loss: a key of ``REFINER_LOSSES``; ``refiner_options`` its keyword options.
        detach_targets: stop the refiner gradient at the targets z_i (see :func:`build_model`).
        ms_weight: weight of the multi-similarity loss on F_emb (0: plain ReFNet).
        pretrain_epochs: epochs of self-supervised pretraining run by :func:`fit`.
    """

    def __init__(self, base: LateFusion, *, dim: int, hidden: int, dropout: float, refiner_weight: dict[str, float],
                 refiner_loss: str, refiner_options: dict[str, Any], detach_targets: bool, ms_weight: float,
                 pretrain_epochs: int):
        super().__init__(base)
        self.decoders = nn.ModuleDict({n: _decoder(hidden, dim, dropout) for n in base.fields})
        self.refiner_weight = dict(refiner_weight)
        self.refiner_loss = refiner_loss
        self.refiner_options = dict(refiner_options)
        self.detach_targets = detach_targets
        self.ms_weight = ms_weight
        self.pretrain_epochs = pretrain_epochs



def _refiner_weights(refiner_weight: float | dict[str, float], fields: tuple[str, ...]) -> dict[str, float]:
    """``{field: gamma}`` for every field: a float applies to all; a dict names fields (the rest get 0)."""
    if isinstance(refiner_weight, dict):
        unknown = sorted(set(refiner_weight) - set(fields))
        if unknown:
            raise ValueError(f"refiner_weight names {unknown}, which are not input fields; fields: {list(fields)}")
        weights = {n: float(refiner_weight.get(n, 0.0)) for n in fields}
    else:
        weights = {n: float(refiner_weight) for n in fields}
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"refiner_weight must be >= 0, got {weights}")
    return weights


def _check_refiner_loss(refiner_loss: str, refiner_options: dict[str, Any]) -> None:
    if refiner_loss not in REFINER_LOSSES:
        raise ValueError(f"unknown refiner_loss {refiner_loss!r}; known: {', '.join(REFINER_LOSSES)}")
    params = inspect.signature(REFINER_LOSSES[refiner_loss]).parameters.values()
    known = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(refiner_options) - known)
    if unknown:
        raise ValueError(f"unknown refiner_options {unknown} for refiner_loss {refiner_loss!r}; "
                         f"known: {sorted(known) or 'none'}")


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
    refiner_weight: float | dict[str, float] = 0.1,
    refiner_loss: str = "cosine",
    refiner_options: dict[str, Any] | None = None,
    detach_targets: bool = True,
    ms_weight: float = 0.0,
    pretrain_epochs: int = 0,
) -> ReFNet:
    """A ReFNet (ReFNet_MS when ``ms_weight > 0``) over a late-fusion base with any fusion.

    Args:
        features, fields, dim, hidden, dropout, fusion, fusion_options, sequence, regression_loss, text_ngrams:
            the base model's options (:func:`methods.late_fusion.build_model`); ``dropout`` also applies in the
            decoders.
        refiner_weight: gamma_i, one float for every field or ``{field: float}`` (fields left out get 0; the
            paper sweeps 0-0.3, MMF's default is 0.1).
        refiner_loss: "cosine" (MMF's default), "mse" or "contrastive".
        refiner_options: keyword options of that loss (``{"variant": "paper_eq4"}``, ``{"margin": 0.2}``).
        detach_targets: True (default) stops the refiner gradient at the targets z_i, so the refiner trains the
            fusion and decoders (Algorithm 1's "weights of the fusion and refiner networks") and the encoders
            cannot shrink z_i to make it easy to reconstruct (in label-free pretraining, MSE would be minimised
            by z = 0); False lets it reach the encoders through the targets too, as MMF's transformer targets do.
        ms_weight: zeta, weight of the multi-similarity loss on F_emb (0-0.3 in the paper, 0.1 in MMF).
        pretrain_epochs: epochs of refiner-only pretraining before the supervised ones (0: none).

    Raises:
        ValueError: a bad base option, an unknown refiner loss or option, negative weights, ``ms_weight > 0``
            on a regression label (the MS loss needs classes), or pretraining with every refiner weight 0.
    """
    base = late_fusion.build_model(features, fields=fields, dim=dim, hidden=hidden, dropout=dropout, fusion=fusion,
                                   fusion_options=fusion_options, sequence=sequence, regression_loss=regression_loss,
                                   text_ngrams=text_ngrams)
    weights = _refiner_weights(refiner_weight, base.fields)
    _check_refiner_loss(refiner_loss, refiner_options or {})
    if ms_weight < 0 or (ms_weight > 0 and base.task == "regression"):
        raise ValueError(f"ms_weight must be >= 0, and 0 for a regression label (the multi-similarity loss needs "
                         f"classes); got {ms_weight} for a {base.task} label {base.label_name!r}")
    if pretrain_epochs < 0 or (pretrain_epochs > 0 and not any(weights.values())):
        raise ValueError(f"pretrain_epochs must be >= 0, and pretraining needs a refiner_weight > 0 (its only "
                         f"loss); got pretrain_epochs={pretrain_epochs}, refiner_weight={weights}")
    return ReFNet(base, dim=dim, hidden=hidden, dropout=dropout, refiner_weight=weights, refiner_loss=refiner_loss,
                  refiner_options=refiner_options or {}, detach_targets=detach_targets, ms_weight=float(ms_weight),
                  pretrain_epochs=int(pretrain_epochs))


def refiner_cost(model: ReFNet, parts: dict[str, torch.Tensor], fused: torch.Tensor) -> torch.Tensor:
    """``sum_i gamma_i C(D_i(F_emb), z_i)`` over the fields with gamma_i > 0 (the others are not computed).

    Args:
        model: a ReFNet.
        parts: the unimodal features ``{field: [B, dim]}`` (targets).
        fused: F_emb [B, hidden].

    Returns:
        float32 scalar; exactly 0 (no graph) when every gamma is 0.
    """
    loss = REFINER_LOSSES[model.refiner_loss]
    total = torch.zeros((), device=fused.device)
    for name, gamma in model.refiner_weight.items():
        if gamma:
            z = parts[name].detach() if model.detach_targets else parts[name]
            total = total + gamma * loss(model.decoders[name](fused), z, **model.refiner_options)
    return total


def training_step(model: ReFNet, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """The supervised loss L = task + refiner + ms for one batch (``tuples`` unused: the MS loss pairs within
    the batch).

    Returns:
        ``{"loss", "pred", "task_loss", "refiner_loss", "ms_loss"}``: the three terms as added into ``loss``
        (weighted; detached, for logging; a term whose weight is 0 is not computed and is 0), and ``pred`` as
        :func:`methods.late_fusion.training_step` gives it.
    """
    parts = model.encode(batch)
    fused = model.fusion(parts)
    out = model.output(fused).float()  # float: under fp16 autocast the loss must still be computed in fp32
    y = target(batch, model.label_name, model.task, model.device)
    task = task_loss(model.task, out, y, model.regression_loss)
    refiner = refiner_cost(model, parts, fused)
    ms = model.ms_weight * multi_similarity_loss(fused, y) if model.ms_weight else torch.zeros((), device=out.device)
    return {"loss": task + refiner + ms, "pred": task_pred(model.task, out), "task_loss": task.detach(),
            "refiner_loss": refiner.detach(), "ms_loss": ms.detach()}


def pretrain_step(model: ReFNet, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """The self-supervised pretraining loss (the refiner cost alone); reads only the input fields, never the
    label, so unlabeled batches work.

    Returns:
        ``{"loss": scalar, "refiner_loss": detached scalar}``.
    """
    parts = model.encode(batch)
    refiner = refiner_cost(model, parts, model.fusion(parts))
    return {"loss": refiner, "refiner_loss": refiner.detach()}


@torch.no_grad()
def predict(model: ReFNet, batch: dict[str, Any]) -> torch.Tensor:
    """The base model's scores (the refiner is dropped at inference): see :func:`methods.late_fusion.predict`."""
    return late_fusion.predict(model.base, batch)


def embed(model: ReFNet, batch: dict[str, Any]) -> torch.Tensor:
    """F_emb [B, hidden], the base's fused embedding."""
    return late_fusion.embed(model.base, batch)


def fit(model: ReFNet, train_batches: Iterable, *, epochs: int, lr: float, weight_decay: float = 0.0,
        device: str | torch.device = "auto", amp: bool | str = False, seed: int = 0,
        valid_batches: Iterable | None = None, unlabeled_batches: Iterable | None = None,
        sampler: TupleSampler | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Algorithm 1: ``model.pretrain_epochs`` of refiner-only pretraining, then ``epochs`` supervised.

    Both phases are :func:`methods.loop.train` runs (a fresh AdamW each, the same lr, weight decay, device, amp
    and seed). Pretraining iterates ``unlabeled_batches`` when given (e.g. the whole split when
    ``train_batches`` is a few-shot subset), else ``train_batches``, reads no labels, and runs its epochs to the
    end as Algorithm 1 does (no validation, no best-epoch restore); its log lines start with "pretrain".
    The arguments are those of :func:`methods.loop.fit`.

    Returns:
        The supervised phase's history (:func:`methods.loop.fit`), plus ``"pretrain"``: the pretraining
        phase's history, or None when ``pretrain_epochs`` is 0.
    """
    options = {"lr": lr, "weight_decay": weight_decay, "device": device, "amp": amp, "seed": seed,
               "sampler": sampler}
    pretrain = None
    if model.pretrain_epochs > 0:
        batches = unlabeled_batches if unlabeled_batches is not None else train_batches
        pretrain = train(pretrain_step, model, batches, epochs=model.pretrain_epochs,
                         log=lambda line: log(f"pretrain {line}"), **options)
    history = train(training_step, model, train_batches, epochs=epochs, valid_batches=valid_batches, log=log,
                    **options)
    history["pretrain"] = pretrain
    return history
