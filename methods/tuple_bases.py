"""The task nets TupleInfoNCE pretrains and fine-tunes: the ``base`` option of :func:`methods.tupleinfonce.build_model`.

:data:`BASES` maps a base name to its method module and a pooled-feature adapter, the two functions the
contrastive code reads from a model (:func:`methods.tuple_contrast.views_loss`, ``placeholder_parts``,
:func:`methods.tuple_search.cross_modal_accuracy`): ``encode(net, batch) -> {field: [B, d]}`` and
``fuse(net, parts) -> [B, h]``. A disturbed negative is ``fuse`` of per-field features gathered from other rows,
so no input is re-encoded.

- ``late_fusion``: the :class:`~methods.late_fusion.LateFusion` encoders and fusion, as they are.
- ``rgbd_seg`` (multiscale fusion only): each field's bottleneck map (encoder scale 3) average-pooled,
  ``[B, 4 width]``; ``fuse`` is the bottleneck mix (a 1x1 conv) applied as a linear map to the concatenated
  pooled maps. The conv is linear and the per-field encoders are independent, so ``fuse(encode(b))`` is
  :func:`methods.rgbd_seg.embed` (the pooled fused bottleneck) exactly, and a disturbed tuple's feature is the
  pooled fused bottleneck of the materialised disturbed batch (eval mode; in train mode batch norm sees
  other batch statistics). Early fusion is refused: its fields meet at the input, before any per-field
  feature exists, so no disturbed tuple can be formed from features.
- ``point_boxes``: each field's :class:`~methods.point_boxes.GroupEncoder` per-seed features (grouped by the
  scene's own geometry) max-pooled over the seeds, ``[B, dim]``; ``fuse`` is the detector's own per-seed
  fusion module applied to the pooled parts. Pooling before the fusion is an approximation (the detector
  fuses per seed, then pools): a disturbed tuple cannot be regrouped by another scene's geometry without
  re-encoding that field once per negative (``B * M * (B - 1)`` group encodings a batch instead of ``B``).
  What the contrastive embedding trains are the encoders and the fusion weights the detector fine-tunes.

Dense bases take their own options in ``base_options`` (e.g. ``{"width": 12}``); the late-fusion options of
:func:`methods.tupleinfonce.build_model` must then keep their defaults (:func:`build_base`). :class:`OverDense`
gives a dense net the attributes the contrastive code reads; :class:`Contrastive` holds what every TupleInfoNCE
model adds to its base (the projection head, the ratios and the strength).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods import late_fusion, point_boxes, rgbd_seg, tuple_contrast
from mmdata.augment import Augmenter
from mmdata.types import Features

Parts = dict[str, torch.Tensor]


def seg_encode(net: rgbd_seg.RGBDSeg, batch: dict[str, Any]) -> Parts:
    """``{field: [B, 4 width]}``: each field's bottleneck map ``[B, 4w, H/4, W/4]`` averaged over space."""
    return {n: net.encoders[n](rgbd_seg.planes(batch, n, net.features[n], net.device))[2].mean(dim=(2, 3))
            for n in net.fields}


def seg_fuse(net: rgbd_seg.RGBDSeg, parts: Parts) -> torch.Tensor:
    """The bottleneck mix (1x1 conv ``M * 4w -> 4w``) as a linear map: ``{field: [N, 4w]}`` -> ``[N, 4w]``."""
    mix = net.mix[2]
    return F.linear(torch.cat([parts[n] for n in net.fields], dim=-1), mix.weight.flatten(1), mix.bias)


def boxes_encode(net: point_boxes.PointBoxes, batch: dict[str, Any]) -> Parts:
    """``{field: [B, dim]}``: each field's per-seed group features ``[B, S, dim]`` max-pooled over the seeds.

    The per-seed features are read with forward hooks on the field encoders during the detector's own
    :meth:`~methods.point_boxes.PointBoxes.encode` (its grouping is not split out); its fused output is unused.
    """
    seeds: Parts = {}
    hooks = [net.encoders[n].register_forward_hook(lambda module, args, out, n=n: seeds.__setitem__(n, out))
             for n in net.fields]
    try:
        net.encode(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {n: seeds[n].amax(dim=1) for n in net.fields}


def boxes_fuse(net: point_boxes.PointBoxes, parts: Parts) -> torch.Tensor:
    """The detector's per-seed fusion on pooled parts: ``{field: [N, dim]}`` -> ``[N, hidden]``."""
    return net.fusion(parts)


def _no_early_fusion(options: Mapping[str, Any]) -> None:
    if options.get("fusion", "multiscale") != "multiscale":
        raise ValueError(f"base 'rgbd_seg' with fusion {options['fusion']!r}: TupleInfoNCE needs fusion "
                         "'multiscale' (with early fusion the fields meet before any per-field feature exists, "
                         "so no disturbed tuple can be formed from features)")


@dataclass(frozen=True)
class Base:
    """A base TupleInfoNCE can wrap.

    Attributes:
        method: its method module (``build_model``, ``training_step``, ``predict``, ``embed``).
        encode: ``encode(net, batch) -> {field: [B, d]}`` pooled per-field features.
        fuse: ``fuse(net, {field: [N, d]}) -> [N, h]``.
        width: ``width(net) -> h``, the size of ``fuse``'s output (the projection's input).
        check: raises ValueError on base options the adapter cannot serve.
    """

    method: ModuleType
    encode: Callable[[nn.Module, dict[str, Any]], Parts]
    fuse: Callable[[nn.Module, Parts], torch.Tensor]
    width: Callable[[nn.Module], int]
    check: Callable[[Mapping[str, Any]], None] = lambda options: None


BASES: dict[str, Base] = {
    "late_fusion": Base(late_fusion, lambda net, batch: net.encode(batch), lambda net, parts: net.fusion(parts),
                        lambda net: net.head.in_features),
    "rgbd_seg": Base(rgbd_seg, seg_encode, seg_fuse, lambda net: net.mix[2].out_channels, _no_early_fusion),
    "point_boxes": Base(point_boxes, boxes_encode, boxes_fuse, lambda net: net.fusion.net[0].out_features),
}


def keyword_defaults(builder: Callable[..., Any]) -> dict[str, Any]:
    """``{option: default}`` of a ``build_model``'s keyword options, ``fields`` excluded."""
    return {n: p.default for n, p in inspect.signature(builder).parameters.items()
            if p.kind == p.KEYWORD_ONLY and n != "fields"}


#: The late-fusion options of tupleinfonce.build_model, with their defaults (those of late_fusion.build_model).
LATE_FUSION_DEFAULTS = keyword_defaults(late_fusion.build_model)


def build_base(features: Features, fields: list[str], base: str, base_options: Mapping[str, Any] | None,
               late_options: Mapping[str, Any]) -> nn.Module:
    """The base net of a TupleInfoNCE model.

    Args:
        base: a key of :data:`BASES`.
        base_options: a dense base's own ``build_model`` options (None: its defaults); not for late_fusion.
        late_options: the late-fusion options (:data:`LATE_FUSION_DEFAULTS` keys) given at the top level.

    Raises:
        ValueError: an unknown base; base_options with late_fusion; a late-fusion option changed for a dense
            base; a base option its builder does not take; a base option the adapter cannot serve; or the
            base builder's own refusal.
    """
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; known: {', '.join(BASES)}")
    if base == "late_fusion":
        if base_options:
            raise ValueError(f"base_options {sorted(base_options)} is for a dense base; base 'late_fusion' takes "
                             f"its options at the top level ({', '.join(LATE_FUSION_DEFAULTS)})")
        return late_fusion.build_model(features, fields=fields, **late_options)
    changed = [k for k, v in late_options.items() if v != LATE_FUSION_DEFAULTS[k]]
    if changed:
        raise ValueError(f"option {changed[0]!r} is a late_fusion option; base {base!r} takes its own options in "
                         f"base_options (e.g. base_options: {{width: 12}})")
    spec, options = BASES[base], dict(base_options or {})
    known = keyword_defaults(spec.method.build_model)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"base_options {unknown} are not options of base {base!r}; it takes: {', '.join(known)}")
    spec.check(options)
    return spec.method.build_model(features, fields=fields, **options)


class OverDense(nn.Module):
    """A model built around a dense base net (``rgbd_seg`` or ``point_boxes``): the net's attributes and the
    adapter's ``encode`` / ``fusion`` as methods, so the contrastive code takes it as it takes a late-fusion
    wrapper. Subclasses call ``super().__init__(net, base)`` and add their own modules.

    Attributes:
        base: the task net (the only part used at inference); base_name: its :data:`BASES` key.
    """

    def __init__(self, net: nn.Module, base: str) -> None:
        super().__init__()
        self.base, self.base_name = net, base

    fields = property(lambda self: self.base.fields, doc="The input field names, in fusion order.")
    features = property(lambda self: self.base.features, doc="The schema of the input fields.")
    label_name = property(lambda self: self.base.label_name, doc="The batch key of the target.")
    device = property(lambda self: self.base.device, doc="The device of the parameters.")
    spec = property(lambda self: BASES[self.base_name], doc="The base's :class:`Base` entry.")

    def encode(self, batch: dict[str, Any]) -> Parts:
        """Pooled per-field features ``{field: [B, d]}`` (the adapter's ``encode``)."""
        return self.spec.encode(self.base, batch)

    def fusion(self, parts: Parts) -> torch.Tensor:
        """``{field: [N, d]}`` -> ``[N, h]`` (the adapter's ``fuse``)."""
        return self.spec.fuse(self.base, parts)

    def forward(self, batch: dict[str, Any]) -> Any:
        """The base net's output (logits maps, or the detector's per-seed dict)."""
        return self.base(batch)


class Contrastive:
    """The contrastive head and settings of :class:`methods.tupleinfonce.TupleInfoNCE` and
    :class:`~methods.tupleinfonce.DenseTupleInfoNCE`: a mixin over an ``nn.Module`` with ``fields`` and
    ``features`` (whichever base it wraps), set up by ``_setup``.

    Attributes:
        projection: ``Linear(h, proj_dim)``, the fused feature [B, h] -> the (then normalised) contrastive
            embedding.
        ratios: ``{field: w_k}`` disturbed-negative weights; strength: augmentation strength of the positives in
            [0, 1]. Both are set by the search and kept in the state dict (buffers ``ratio_values``,
            ``strength_value``).
        settings: the other options of :func:`methods.tupleinfonce.build_model`, as attributes of the same names.
    """

    def _setup(self, width: int, proj_dim: int, ratios: dict[str, float], strength: float,
               settings: dict[str, Any]) -> None:
        """Register the projection (``width -> proj_dim``) and the buffers, in this order (state-dict keys)."""
        self.projection = nn.Linear(width, proj_dim)
        # Buffers, so that a checkpoint keeps what the search found (describe() reports it after reloading).
        self.register_buffer("ratio_values", torch.tensor([ratios[n] for n in self.fields], dtype=torch.float64))
        self.register_buffer("strength_value", torch.tensor(float(strength), dtype=torch.float64))
        for name, value in settings.items():
            setattr(self, name, value)
        self._augmenters: dict[float, Augmenter] = {}

    @property
    def ratios(self) -> dict[str, float]:
        """``{field: w_k}`` disturbed-negative weights."""
        return dict(zip(self.fields, self.ratio_values.tolist()))

    @ratios.setter
    def ratios(self, value: dict[str, float]) -> None:
        self.ratio_values.copy_(torch.tensor([value[n] for n in self.fields], dtype=torch.float64))

    @property
    def strength(self) -> float:
        """Augmentation strength of the positives, in [0, 1]."""
        return float(self.strength_value)

    @strength.setter
    def strength(self, value: float) -> None:
        self.strength_value.fill_(float(value))

    def log_ratios(self) -> torch.Tensor:
        """float32 ``[M]`` log w_k in field order (-inf for a weight of 0), on the model's device."""
        return self.ratio_values.log().float()

    def augmenter(self) -> Augmenter:
        """The positives' augmenter at the current strength (:func:`methods.tuple_contrast.view_augmenter`)."""
        if self.strength not in self._augmenters:
            self._augmenters[self.strength] = tuple_contrast.view_augmenter(self.features, self.strength)
        return self._augmenters[self.strength]
