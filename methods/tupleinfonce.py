"""TupleInfoNCE (Liu et al. 2021, "Contrastive Multimodal Fusion with TupleInfoNCE"; ../shared/methods.md 5).

Contrastive pretraining of a fusion encoder, then fine-tuning on the labels. The base net (``base``,
:mod:`methods.tuple_bases`) is a late-fusion model (:class:`~methods.late_fusion.LateFusion`, any fusion), or a
dense task net as the paper uses (NYUv2 segmentation: ``rgbd_seg``; SUN RGB-D boxes: ``point_boxes``) whose
pooled per-field features and fusion an adapter exposes; a dense base is fine-tuned, predicts and embeds through
its own method module. The pretraining embedding is g = normalise(projection(F_emb)); anchors are the batch,
positives its augmented view (:func:`mmdata.augment.batched.augment_batch`, the modalities' default policy at
``strength``), negatives the other rows' positives (alpha_0) plus each anchor's k = 1 disturbed tuples from
:func:`mmdata.samplers.tuple_disturb` (derangement partners: never the anchor's own item), weighted by the
real ``ratios`` w_k as log-weights (:mod:`methods.tuple_contrast`). ``objective="infonce"`` is the plain
in-batch InfoNCE baseline on the same views, ``"none"`` the scratch baseline (fine-tuning only). Modality dropout
(App. H): with probability ``modality_dropout`` per batch, every row of the anchors and, independently, of the
positives loses a random non-empty proper subset of modalities (zeros); a positive's missing modalities are
missing in all of its negatives too. The optional search (:mod:`methods.tuple_search`) optimises the ratios and
the strength by REINFORCE on the cross-modal discrimination reward before pretraining.

Choices (spec 5.1-5.2, 8): temperature 0.07 (the official code; methods.md 7.2's info-nce-pytorch uses 0.1);
gradients reach the keys too (the code's keys come from a no-grad copy with momentum 0: the same values);
real log-weights instead of the code's integer 2^(r-1) block copies; dropout p = 0.6 (the paper; the code's
three modes give 2/3); one strength for all fields (the paper optimises one per modality).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from methods import tuple_contrast, tuple_search
from methods.heads import target, task_loss, task_pred
from methods.late_fusion import LateFusion, OverLateFusion
from methods.loop import TupleSampler, train
from methods.tuple_bases import BASES, Contrastive, OverDense, build_base
from methods.tuple_contrast import DisturbSampler, dropout_masks, positive_view, resolve_weights, views_loss
from mmdata.samplers import batch_rng
from mmdata.types import Features, Tuples

OBJECTIVES, PROBES, SEARCHES = tuple_contrast.OBJECTIVES, tuple_contrast.PROBES, tuple_search.TARGETS


class TupleInfoNCE(Contrastive, OverLateFusion):
    """A late-fusion base plus the projection head of the contrastive embedding (:class:`Contrastive`); the
    base's attributes and ``encode`` / ``embed`` / ``output`` / ``forward`` are delegated (robustness and
    retrieval take it as is). ``base``: the late-fusion model (the only part used at inference).
    """

    def __init__(self, base: LateFusion, *, proj_dim: int, ratios: dict[str, float], strength: float,
                 **settings: Any):
        OverLateFusion.__init__(self, base)
        self._setup(base.head.in_features, proj_dim, ratios, strength, {"base_name": "late_fusion", **settings})


class DenseTupleInfoNCE(Contrastive, OverDense):
    """A dense task net (``rgbd_seg``, ``point_boxes``) plus the projection head (:class:`Contrastive`), sized
    by its adapter's fused feature; ``encode`` / ``fusion`` are the adapter's (:mod:`methods.tuple_bases`).
    """

    def __init__(self, net: nn.Module, base: str, *, proj_dim: int, ratios: dict[str, float], strength: float,
                 **settings: Any):
        OverDense.__init__(self, net, base)
        self._setup(BASES[base].width(net), proj_dim, ratios, strength, settings)


def build_model(
    features: Features,
    *,
    fields: list[str],
    base: str = "late_fusion",
    base_options: dict[str, Any] | None = None,
    dim: int = 64,
    hidden: int = 128,
    dropout: float = 0.1,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
    sequence: str = "sequence",
    regression_loss: str = "l1",
    text_ngrams: int = 2,
    objective: str = "tuple",
    pretrain_epochs: int = 4,
    pretrain_lr: float | None = None,
    temperature: float = 0.07,
    proj_dim: int = 64,
    num_negatives: int | None = None,
    ratios: Mapping[str, float] | Sequence[float] | None = None,
    strength: float = 0.5,
    modality_dropout: float = 0.6,
    search: bool | str = False,
    search_epochs: int = 4,
    clones: int = 5,
    inner_epochs: int = 1,
    candidates: int = 256,
    probe: str = "finetune",
) -> TupleInfoNCE | DenseTupleInfoNCE:
    """A TupleInfoNCE model over a base net: late fusion with any fusion, or a dense task net.

    Args:
        base: a key of :data:`methods.tuple_bases.BASES`: "late_fusion", "rgbd_seg" (multiscale fusion) or
            "point_boxes" (:mod:`methods.tuple_bases` says what each pretrains).
        base_options: a dense base's own ``build_model`` options (e.g. ``{"width": 12}``); None: its defaults.
        features, fields, dim, hidden, dropout, fusion, fusion_options, sequence, regression_loss, text_ngrams:
            the late-fusion base's options (:func:`methods.late_fusion.build_model`); with a dense base they
            must keep their defaults.
        objective: "tuple" (TupleInfoNCE), "infonce" (in-batch InfoNCE on the same views) or "none" (scratch).
        pretrain_epochs: contrastive epochs before fine-tuning (after the search, if any).
        pretrain_lr: learning rate of the label-free phases (search clones, pretraining); None: the run's lr.
        temperature: t of the loss (0.07, the official code's).
        proj_dim: size of the contrastive embedding.
        num_negatives: disturbed negatives per anchor, split equally over the fields (None: every other row
            once per field, M * (B - 1)); used when the run configures no sampler (see :class:`DisturbSampler`).
        ratios: w_k per field (``{field: w}`` naming every field, or a list in field order; None: all 1) =
            alpha_k / alpha_0: the weight of the k-disturbed negatives relative to the in-batch ones, each
            type's slots standing for a whole block of B - 1 partners (the spec's w_k B / (B - 1)).
        strength: augmentation strength of the positives, in [0, 1] (0: the positive is the anchor, as the
            official pretrain.py).
        modality_dropout: probability per batch of modality dropout (0.6, App. H); with one field nothing can
            be dropped (one modality must stay) and it has no effect.
        search: False, True / "both" (strength on even search epochs, ratios on odd, as the paper), "ratios"
            (the paper's MOSI/MOSEI setting: features allow no meaningful augmentation) or "strength".
        search_epochs, clones, inner_epochs: outer epochs, clones per epoch, pretraining epochs per clone.
        candidates: size of the fixed candidate pool of the discrimination reward.
        probe: "finetune" (the whole model on the labels) or "linear" (the encoder frozen; the head only;
            late_fusion only: a dense base's decoder or box head also reads features the contrastive embedding
            does not cover, the segmentation decoder's skips and the detector's per-seed features).

    Raises:
        ValueError: an unknown base or a bad base option (:func:`methods.tuple_bases.build_base`), a linear
            probe of a dense base, an unknown objective, probe or search, a value out of range, ratios not
            matching the fields, or a search with nothing to search.
    """
    if base != "late_fusion" and probe == "linear":
        raise ValueError(f"probe 'linear' needs base 'late_fusion', got base {base!r}: a dense base's task head "
                         "also reads features the contrastive embedding does not cover; use probe 'finetune'")
    late = {"dim": dim, "hidden": hidden, "dropout": dropout, "fusion": fusion, "fusion_options": fusion_options,
            "sequence": sequence, "regression_loss": regression_loss, "text_ngrams": text_ngrams}
    net = build_base(features, list(fields), base, base_options, late)
    weights = resolve_weights(ratios, net.fields)
    if pretrain_lr is not None and not pretrain_lr > 0:
        raise ValueError(f"pretrain_lr must be > 0 (or None: the run's lr), got {pretrain_lr}")
    counts = {"pretrain_epochs": pretrain_epochs, "search_epochs": search_epochs, "clones": clones,
              "inner_epochs": inner_epochs, "candidates": candidates, "num_negatives": num_negatives or 0}
    tuple_contrast.check_options(objective, probe, search, temperature, strength, modality_dropout, weights,
                                 counts)
    settings = {"objective": objective, "pretrain_epochs": int(pretrain_epochs), "pretrain_lr": pretrain_lr,
                "temperature": float(temperature),
                "num_negatives": num_negatives, "modality_dropout": float(modality_dropout), "search": search,
                "search_epochs": int(search_epochs), "clones": int(clones), "inner_epochs": int(inner_epochs),
                "candidates": int(candidates), "probe": probe}
    if base == "late_fusion":
        return TupleInfoNCE(net, proj_dim=proj_dim, ratios=weights, strength=strength, **settings)
    return DenseTupleInfoNCE(net, base, proj_dim=proj_dim, ratios=weights, strength=strength, **settings)


def default_sampler(model: TupleInfoNCE) -> DisturbSampler:
    """The negatives drawn when the run configures no sampler."""
    return DisturbSampler(tuple(model.fields), model.num_negatives)


def pretrain_step(model: TupleInfoNCE, batch: dict[str, Any], tuples: Tuples | None = None, *,
                  where: tuple[int, int, int] = (0, 0, 0)) -> dict[str, torch.Tensor]:
    """The contrastive loss of one batch (reads no label).

    Args:
        tuples: the batch's negatives over ``model.fields``; None draws :func:`default_sampler`'s from
            ``batch_rng(seed, epoch, index, "train")`` (as the loop would).
        where: ``(seed, epoch, batch index)``, the key of the view's and the dropout's draws (:func:`fit` passes
            the loop's position).

    Returns:
        ``{"loss", "contrastive_loss", "negatives"}`` (:func:`methods.tuple_contrast.views_loss`).
    """
    if model.objective == "none":
        raise ValueError("objective 'none' has no pretraining loss")
    n = len(batch["__key__"])
    if tuples is None and model.objective == "tuple":
        tuples = default_sampler(model)(n, batch_rng(*where, "train"))
    anchor_mask, key_mask = dropout_masks(model, n, where)
    return views_loss(model, batch, positive_view(model, batch, where), tuples, anchor_mask=anchor_mask,
                      key_mask=key_mask)


def _frozen_embed(model: TupleInfoNCE, batch: dict[str, Any]) -> torch.Tensor:
    """F_emb [B, hidden] without gradients and with the encoders and fusion in eval mode (a linear probe)."""
    modes = [(m, m.training) for m in (model.base.encoders, model.base.fusion)]
    try:
        for module, _ in modes:
            module.eval()
        with torch.no_grad():
            return model.base.embed(batch)
    finally:
        for module, mode in modes:
            module.train(mode)


def training_step(model: TupleInfoNCE | DenseTupleInfoNCE, batch: dict[str, Any], tuples: Tuples | None = None
                  ) -> dict[str, torch.Tensor]:
    """The fine-tuning loss: ``{"loss", "pred"}``. A late-fusion base: the task loss of :mod:`methods.heads`
    (``tuples`` unused; with ``probe="linear"`` only the head gets gradients); a dense base: its own method's
    ``training_step`` (per-pixel cross-entropy ``pred [B, H, W]``, or the box losses ``pred [B, S]``)."""
    if model.base_name != "late_fusion":
        return BASES[model.base_name].method.training_step(model.base, batch, tuples)
    fused = _frozen_embed(model, batch) if model.probe == "linear" else model.base.embed(batch)
    out = model.output(fused).float()  # float: under fp16 autocast the loss must still be computed in fp32
    y = target(batch, model.label_name, model.task, model.device)
    return {"loss": task_loss(model.task, out, y, model.regression_loss), "pred": task_pred(model.task, out)}


@torch.no_grad()
def predict(model: TupleInfoNCE | DenseTupleInfoNCE, batch: dict[str, Any]) -> torch.Tensor:
    """The base method's predictions: scores [B, C] / values [B] (:func:`methods.late_fusion.predict`), class
    maps [B, H, W] (:func:`methods.rgbd_seg.predict`) or detections [B, D, 9] (:func:`methods.point_boxes.predict`)."""
    return BASES[model.base_name].method.predict(model.base, batch)


def embed(model: TupleInfoNCE | DenseTupleInfoNCE, batch: dict[str, Any]) -> torch.Tensor:
    """The base method's embedding [B, h] (the fine-tuned representation): late fusion's F_emb, the pooled fused
    bottleneck of rgbd_seg, the detector's seed-pooled fused features."""
    return BASES[model.base_name].method.embed(model.base, batch)


def describe(model: TupleInfoNCE | DenseTupleInfoNCE) -> dict[str, float]:
    """The base method's own figures (where it has ``describe``), plus the negative weights and positive strength
    the run trained with (the search's result when it ran): ``{"ratio_<field>": w_k, ..., "strength": a}``;
    the latter are left out for the scratch objective."""
    own = getattr(BASES[model.base_name].method, "describe", None)
    base = own(model.base) if own is not None else {}
    if model.objective == "none":
        return base
    return {**base, **{f"ratio_{n}": w for n, w in model.ratios.items()}, "strength": model.strength}


def located_step(batches: tuple_search.Positions, seed: int) -> Callable[..., dict[str, torch.Tensor]]:
    """:func:`pretrain_step` keyed by the loop's current position in ``batches``, under ``seed``."""
    return lambda model, batch, tuples: pretrain_step(model, batch, tuples, where=(seed, batches.epoch, batches.index))


def fit(model: TupleInfoNCE, train_batches: Iterable, *, epochs: int, lr: float, weight_decay: float = 0.0,
        device: str | torch.device = "auto", amp: bool | str = False, seed: int = 0,
        valid_batches: Iterable | None = None, unlabeled_batches: Iterable | None = None,
        sampler: TupleSampler | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """[search] + ``pretrain_epochs`` of contrastive pretraining + ``epochs`` of fine-tuning.

    Every phase is :func:`methods.loop.train` (a fresh AdamW, the same weight decay, device, amp; the lr, or
    the model's ``pretrain_lr`` for the label-free phases). The label-free phases iterate ``unlabeled_batches``
    when given, else ``train_batches``, and draw each batch's tuples with ``sampler`` (default
    :func:`default_sampler`) from (seed, epoch, index); the search scores
    clones on the first ``candidates`` rows of ``valid_batches`` (else ``train_batches``), labels unread.
    Fine-tuning validates and restores the best epoch as the loop does. The arguments are those of
    :func:`methods.loop.fit`.

    Returns:
        The fine-tuning history (:func:`methods.loop.fit`), plus ``"pretrain"`` (its history, None without),
        ``"search"`` (:func:`methods.tuple_search.search`'s record, None without), ``"discrimination"`` (the
        pool's cross-modal discrimination after pretraining), ``"ratios"`` and ``"strength"`` (final).
    """
    options = {"lr": lr, "weight_decay": weight_decay, "device": device, "amp": amp}
    label_free = {**options, "lr": lr if model.pretrain_lr is None else model.pretrain_lr}
    record: dict[str, Any] = {"pretrain": None, "search": None, "discrimination": None}
    if model.objective != "none":
        batches = tuple_search.Positions(unlabeled_batches if unlabeled_batches is not None else train_batches)
        sampler = sampler if sampler is not None else default_sampler(model)
        pool = tuple_search.pool_batches(valid_batches if valid_batches is not None else train_batches,
                                         model.candidates)
        if model.search:
            record["search"] = tuple_search.search(model, batches, pool, located_step, seed=seed, sampler=sampler,
                                                   options=label_free, log=log)
        if model.pretrain_epochs:
            record["pretrain"] = train(located_step(batches, seed), model, batches, epochs=model.pretrain_epochs,
                                       seed=seed, sampler=sampler, log=lambda line: log(f"pretrain {line}"),
                                       **label_free)
        record["discrimination"] = tuple_search.cross_modal_accuracy(model, pool, seed=seed)
        log(f"pretrain discrimination {record['discrimination']}")
    history = train(training_step, model, train_batches, epochs=epochs, valid_batches=valid_batches, seed=seed,
                    log=log, **options)
    return {**history, **record, "ratios": dict(model.ratios), "strength": model.strength}
