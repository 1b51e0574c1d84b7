"""Small RGB-D semantic segmentation net: a conv encoder per input field, fusion, a U-Net style decoder.

Task-specific model: dense per-pixel class maps (NYUv2 segmentation), not a general fusion method.

Fusion ``"multiscale"`` (FuseNet / ESANet style, with concatenation instead of their sums and attention)
concatenates the fields' feature maps at each of the three encoder scales and mixes them with a 1x1 conv;
the decoder upsamples the fused bottleneck and joins the fused skips. ``"early"`` stacks the input channels
and runs one encoder. With one field in ``fields`` both are the unimodal baseline of the same architecture.

Inputs are read from the batch by modality: ``image`` uint8 [B, H, W, 3] -> 0..1; ``depth`` uint16 millimetres
[B, H, W] -> metres; ``normal`` uint8 [B, H, W, 3] -> -1..1 (mmdata.modalities.depth's encoding); other float maps as
they are. Labels are class maps [B, H, W] with 0 = void, ignored by the loss and never predicted.

The dense encoder lives here rather than in ``methods.blocks`` because its outputs are feature maps at
several scales, which no other method consumes.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.blocks import field_input, label_field
from methods.losses import median_frequency_weights
from mmdata.types import Features, Field, Tuples, field_modality

#: The ``fusion`` option: where the fields meet (not modules of :data:`methods.fusions.FUSIONS`).
FUSION_MODES = ("multiscale", "early")
VOID = 0


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv-bn-relu layers."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def channels(field: Field) -> int:
    """Input channels of a map field: [H, W] -> 1, [H, W, C] -> C."""
    return field.shape[2] if len(field.shape) == 3 else 1


def planes(batch: dict[str, Any], name: str, field: Field, device: torch.device) -> torch.Tensor:
    """One map field as float [B, C, H, W] on ``device``, scaled by modality (see the module docstring)."""
    if len(field.shape) not in (2, 3) or None in field.shape:
        raise ValueError(f"field {name!r} is not a fixed [H, W] or [H, W, C] map: shape {field.shape}")
    if batch[name].dtype == torch.uint16:  # few CUDA kernels take uint16: widen on the host first
        batch = {**batch, name: batch[name].to(torch.int32)}
    x, _ = field_input(batch, name, field, device)  # uint8 -> 0..1, others -> float
    modality = field_modality(name)
    if modality == "depth" and field.dtype == "uint16":
        x = x / 1000.0
    elif modality == "normal" and field.dtype == "uint8":
        x = x * 2.0 - 1.0
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)


class Encoder(nn.Module):
    """Three scales: full, 1/2 and 1/4 resolution with ``width``, 2x and 4x channels; [B, C, H, W] -> 3 maps."""

    def __init__(self, c_in: int, width: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList([_conv(c_in, width), _conv(width, 2 * width), _conv(2 * width, 4 * width)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, C, H, W] -> [[B, w, H, W], [B, 2w, H/2, W/2], [B, 4w, H/4, W/4]]."""
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(F.max_pool2d(x, 2, ceil_mode=True) if i else x)
            maps.append(x)
        return maps


class RGBDSeg(nn.Module):
    """Per-field encoders (or one, for early fusion), fusion per scale, decoder, per-pixel logits [B, K, H, W].

    Attributes:
        fields: input field names, in fusion order.
        label_name: the batch key of the class map.
    """

    def __init__(self, features: Features, fields: list[str], width: int, fusion: str, balance: bool) -> None:
        super().__init__()
        self.balance = balance
        self.label_name, label = label_field(features)
        self.fields, self.fusion = tuple(fields), fusion
        self.features = {n: features[n] for n in self.fields}
        inputs = {n: channels(f) for n, f in self.features.items()}
        groups = {"early": sum(inputs.values())} if fusion == "early" else inputs
        self.encoders = nn.ModuleDict({n: Encoder(c, width) for n, c in groups.items()})
        self.mix = nn.ModuleList([nn.Conv2d(len(groups) * width * 2 ** s, width * 2 ** s, 1) for s in range(3)])
        self.up = nn.ModuleList([_conv(6 * width, 2 * width), _conv(3 * width, width)])
        self.head = nn.Conv2d(width, len(label.classes), 1)

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs are moved)."""
        return next(self.parameters()).device

    def fused(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Fused feature maps at the three scales."""
        x = {n: planes(batch, n, self.features[n], self.device) for n in self.fields}
        if self.fusion == "early":
            x = {"early": torch.cat([x[n] for n in self.fields], dim=1)}
        maps = [self.encoders[n](x[n]) for n in self.encoders]
        return [mix(torch.cat([m[s] for m in maps], dim=1)) for s, mix in enumerate(self.mix)]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits [B, K, H, W] over the label's K classes (class 0 = void included, never trained)."""
        full, half, quarter = self.fused(batch)
        x = F.interpolate(quarter, size=half.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up[0](torch.cat([x, half], dim=1))
        x = F.interpolate(x, size=full.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.up[1](torch.cat([x, full], dim=1)))


def build_model(features: Features, *, fields: list[str], width: int = 16, fusion: str = "multiscale",
                balance: bool = True) -> RGBDSeg:
    """An RGB-D segmentation net over map ``fields`` of a corpus with a class-map label.

    Args:
        features: the corpus schema (fields must be fixed [H, W] / [H, W, C] maps of one size; the label a
            [H, W] class map with ``classes``, class 0 = void).
        fields: input fields, e.g. ["image", "depth", "normal"]; one name gives the unimodal baseline.
        width: channels of the first scale (doubled at each of the next two).
        fusion: "multiscale" (concatenate per scale) or "early" (concatenate the inputs).
        balance: weight the loss by median class frequency (rare classes such as pictures and boxes would
            otherwise be learnt late or not at all in a short schedule).

    Raises:
        ValueError: unknown fields or fusion, fields of different sizes, or a label without classes.
    """
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name map fields of the corpus; unknown {missing}, known {sorted(features)}")
    if fusion not in FUSION_MODES:
        raise ValueError(f"unknown fusion {fusion!r}; known: {', '.join(FUSION_MODES)}")
    not_maps = [f"{n} {list(features[n].shape)}" for n in fields
                if len(features[n].shape) not in (2, 3) or None in features[n].shape]
    if not_maps:
        raise ValueError(f"rgbd_seg reads fixed [H, W] or [H, W, C] map fields; not maps: {', '.join(not_maps)}")
    _, label = label_field(features)
    sizes = {tuple(features[n].shape[:2]) for n in fields} | {tuple(label.shape[:2])}
    if not label.classes or len(label.classes) > 256 or len(sizes) != 1:
        raise ValueError(f"need a class-map label (<= 256 classes) and inputs of the label's size; got "
                         f"{len(label.classes or ())} classes, sizes {sorted(sizes)}")
    return RGBDSeg(features, list(fields), width, fusion, balance)


def _target(model: RGBDSeg, batch: dict[str, Any]) -> torch.Tensor:
    return batch[model.label_name].to(model.device, non_blocking=True).long()


def training_step(model: RGBDSeg, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """Per-pixel cross-entropy over labelled pixels (void ignored); ``tuples`` unused.

    Returns:
        ``{"loss": scalar, "pred": [B, H, W] class ids (detached)}``.
    """
    logits = model(batch).float()
    target = _target(model, batch)
    weight = median_frequency_weights(target, logits.shape[1], VOID) if model.balance else None
    loss = F.cross_entropy(logits, target, weight=weight, ignore_index=VOID)
    return {"loss": loss, "pred": _classes(logits).detach()}


def _classes(logits: torch.Tensor) -> torch.Tensor:
    """Class ids [B, H, W] uint8 (K <= 256), void excluded: the arg max over classes 1..K-1."""
    return (logits[:, 1:].argmax(dim=1) + 1).to(torch.uint8)


@torch.no_grad()
def predict(model: RGBDSeg, batch: dict[str, Any]) -> torch.Tensor:
    """Predicted class maps [B, H, W] uint8 (uint8 keeps a test set of 480x640 maps small in memory)."""
    return _classes(model(batch).float())


def embed(model: RGBDSeg, batch: dict[str, Any]) -> torch.Tensor:
    """The fused bottleneck, average-pooled: [B, 4 * width]."""
    return model.fused(batch)[2].mean(dim=(2, 3))
