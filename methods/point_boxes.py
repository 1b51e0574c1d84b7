"""Point-cloud box detector for SUN RGB-D-style scenes: a VoteNet-lite that trains on two CPU cores.

Task-specific model: 3D boxes from point clouds (SUN RGB-D), not a general fusion method.

Seeds are every ``n // seeds``-th input point (the reader's points are a random draw, so a stride is a random
subset spread like the cloud). Each seed groups its ``neighbours`` nearest points (by xyz); every input field
has its own one-layer PointNet over the group (:class:`GroupEncoder`): positions relative to the seed (plus the
seed's own position) for ``points``, raw values for ``points_rgb`` and ``points_height``. The per-seed features
are fused by :data:`methods.fusions.FUSIONS` (concat), joined with their max over the seeds (scene context), and
a head gives each seed class logits (background + classes), a vote for its box centre, log half sizes and the
heading as ``(cos 2h, sin 2h)`` (a box turned by pi is the same box). A seed inside a ground-truth box (the
smallest one, when nested) learns that box, with ``l >= w`` so that each box has one target; other seeds learn
background. ``predict`` averages the boxes of same-class seeds whose votes meet within 0.3 m (VoteNet's vote
clustering), then keeps the best per class by greedy NMS on axis-aligned 3D IoU, as VoteNet's evaluation does.

``points`` must be among the fields: geometry is what places a box; colour and height are added per point,
so the unimodal baseline is ``[points]`` and the ablations add ``points_rgb`` or ``points_height`` to it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.blocks import field_input, label_field
from methods.fusions import FUSIONS
from mmdata.types import Features, Tuples

GEOMETRY = "points"
POSITION_SCALE = 0.3  # metres: neighbour offsets divided by this are ~unit sized
INSIDE_MARGIN = 0.03  # metres: surface points of a box count as inside it
VOTE_RADIUS = 0.3  # metres: votes this close (same class) describe one object (VoteNet's cluster radius)


class GroupEncoder(nn.Module):
    """A one-layer PointNet over each seed's group, then an MLP: ``[B, N, C] -> [B, S, dim]``.

    The layer before the max is linear, so it runs once per point (``N`` rows) instead of once per neighbour
    (``S * k`` rows, 4x more with the mini's settings); on relative positions ``W (x_j - x_s) = W x_j - W x_s``
    keeps that exact, and a ReLU commutes with the max. The group then costs one gather and one max: 9-11 ms
    per encoder and training step against 20-28 ms for PointNet++'s two-layer per-neighbour MLP (one core,
    16 scenes x 192 seeds x 16 neighbours, dim 32); a 35-epoch fused run on the mini takes ~17 s of one core.
    """

    def __init__(self, in_dim: int, dim: int, relative: bool) -> None:
        super().__init__()
        self.point, self.relative = nn.Linear(in_dim, dim), relative
        self.post = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True))
        if relative:  # where the seed itself is (height above the camera): zero at first, learnt if it helps
            self.absolute = nn.Linear(in_dim, dim, bias=False)
            nn.init.zeros_(self.absolute.weight)

    def forward(self, values: torch.Tensor, near: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """values ``[B, N, C]``, neighbour indices ``near [B, S, k]``, seed values ``[B, S, C]`` -> ``[B, S, dim]``."""
        rows = torch.arange(values.shape[0], device=values.device)[:, None, None]
        pooled = self.point(values)[rows, near].max(dim=2).values  # max: its backward scatters, amax masks
        if self.relative:  # subtracting a per-seed term commutes with the max over its group
            pooled = pooled - F.linear(seeds, self.point.weight) + self.absolute(seeds)
        return self.post(F.relu(pooled))


class PointBoxes(nn.Module):
    """Seeds, grouping, per-field encoders, fusion and the per-seed box head (see the module docstring)."""

    def __init__(self, features: Features, fields: list[str], *, dim: int, hidden: int, seeds: int,
                 neighbours: int, classes: int, dropout: float, detections: int, nms_iou: float,
                 min_score: float) -> None:
        super().__init__()
        self.label_name, _ = label_field(features)
        self.fields, self.features = tuple(fields), {n: features[n] for n in fields}
        self.seeds, self.neighbours, self.classes = seeds, neighbours, classes
        self.detections, self.nms_iou, self.min_score = detections, nms_iou, min_score
        self.encoders = nn.ModuleDict({n: GroupEncoder(features[n].shape[-1], dim, relative=n == GEOMETRY)
                                       for n in self.fields})
        self.fusion = FUSIONS["concat"]({n: dim for n in self.fields}, hidden, dropout)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, classes + 1 + 3 + 3 + 2))

    @property
    def device(self) -> torch.device:
        """Where the parameters (and so the inputs) live."""
        return next(self.parameters()).device

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Seed positions ``[B, S, 3]`` and seed features ``[B, S, 2 * hidden]`` (fused + scene context)."""
        values = {n: field_input(batch, n, self.features[n], self.device)[0] for n in self.fields}
        xyz = values[GEOMETRY]
        stride = max(1, xyz.shape[1] // self.seeds)
        seed_xyz = xyz[:, ::stride][:, :self.seeds]
        near = torch.cdist(seed_xyz, xyz).topk(min(self.neighbours, xyz.shape[1]), dim=-1, largest=False).indices
        values[GEOMETRY] = xyz / POSITION_SCALE  # neighbour offsets of ~unit size
        if "points_rgb" in values:
            values["points_rgb"] = values["points_rgb"] - 0.5
        parts = {n: self.encoders[n](v, near, v[:, ::stride][:, :self.seeds]) for n, v in values.items()}
        fused = self.fusion(parts)  # [B, S, hidden]
        scene = fused.amax(dim=1, keepdim=True).expand_as(fused)
        return seed_xyz, torch.cat([fused, scene], dim=-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per seed: ``xyz [B, S, 3]``, ``logits [B, S, classes + 1]`` (0 = background), ``centre [B, S, 3]``,
        ``log_size [B, S, 3]`` (half sizes l, w, h) and ``heading2 [B, S, 2]`` (cos 2h, sin 2h)."""
        seed_xyz, feats = self.encode(batch)
        out = self.head(feats)
        c = self.classes + 1
        return {"xyz": seed_xyz, "logits": out[..., :c], "centre": seed_xyz + out[..., c:c + 3],
                "log_size": out[..., c + 3:c + 6], "heading2": out[..., c + 6:c + 8]}


def build_model(features: Features, *, fields: list[str], dim: int = 64, hidden: int = 128, seeds: int = 256,
                neighbours: int = 16, classes: int = 10, dropout: float = 0.0, detections: int = 32,
                nms_iou: float = 0.25, min_score: float = 0.05) -> PointBoxes:
    """A point-cloud box detector over ``fields`` (which must include ``points``).

    Args:
        features: the corpus schema: ``points [N, 3]``, optional ``points_*`` ``[N, C]`` fields, and a label of
            VoteNet boxes ``[max_boxes, 8]`` (class -1 rows are padding).
        fields: input fields, e.g. ``[points, points_rgb, points_height]``.
        dim, hidden: per-field group feature size and fused size.
        seeds, neighbours: proposals per scene and the points grouped around each.
        classes: number of object classes (VoteNet's SUN RGB-D: 10).
        dropout: after the fusion layer.
        detections, nms_iou, min_score: ``predict`` keeps at most this many boxes per scene, suppressing
            same-class boxes whose axis-aligned 3D IoU exceeds ``nms_iou``, and only scores above ``min_score``.

    Raises:
        ValueError: ``points`` missing from ``fields``, an unknown field, or a non-point field.
    """
    unknown = [n for n in fields if n not in features]
    if GEOMETRY not in fields or unknown:
        raise ValueError(f"fields must include {GEOMETRY!r} (geometry places the boxes) and name corpus fields; "
                         f"got {fields}, unknown {unknown}")
    flat = [n for n in fields if not n.startswith(GEOMETRY) or len(features[n].shape) != 2]
    if flat:
        raise ValueError(f"point_boxes reads per-point fields [N, C] only, not {flat}")
    return PointBoxes(features, list(fields), dim=dim, hidden=hidden, seeds=seeds, neighbours=neighbours,
                      classes=classes, dropout=dropout, detections=detections, nms_iou=nms_iou,
                      min_score=min_score)


def seed_targets(xyz: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which box each seed lies in: class ``[B, S]`` (0 = none, else class + 1) and that box ``[B, S, 7]``.

    Args:
        xyz: seed positions ``[B, S, 3]``.
        boxes: ``[B, M, 8]`` VoteNet boxes (half sizes, heading clockwise from +x), class -1 = padding.
    """
    d = xyz[:, :, None, :] - boxes[:, None, :, :3]  # [B, S, M, 3]
    cos, sin = torch.cos(boxes[..., 6])[:, None], torch.sin(boxes[..., 6])[:, None]
    along, across = d[..., 0] * cos - d[..., 1] * sin, d[..., 0] * sin + d[..., 1] * cos
    half = boxes[:, None, :, 3:6] + INSIDE_MARGIN
    inside = (along.abs() <= half[..., 0]) & (across.abs() <= half[..., 1]) & (d[..., 2].abs() <= half[..., 2])
    inside &= (boxes[..., 7] >= 0)[:, None]
    volume = boxes[..., 3:6].prod(dim=-1)[:, None].expand_as(inside).masked_fill(~inside, math.inf)
    best = volume.argmin(dim=-1)  # the smallest containing box: nested objects go to the inner one
    chosen = torch.gather(boxes, 1, best[..., None].expand(-1, -1, 8))
    cls = torch.where(inside.any(dim=-1), chosen[..., 7].long() + 1, torch.zeros_like(best))
    return cls, chosen[..., :7]


def _canonical(box: torch.Tensor) -> torch.Tensor:
    """Boxes ``[..., 7]`` with ``l >= w`` (swap and turn by pi/2 otherwise): one target per physical box."""
    swap = box[..., 4] > box[..., 3]
    l, w = torch.where(swap, box[..., 4], box[..., 3]), torch.where(swap, box[..., 3], box[..., 4])
    heading = box[..., 6] + swap.to(box.dtype) * (math.pi / 2)
    return torch.stack([box[..., 0], box[..., 1], box[..., 2], l, w, box[..., 5], heading], dim=-1)


def training_step(model: PointBoxes, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """Seed classification (cross-entropy, background weighted 0.5) plus, on seeds inside a box, smooth-L1 on
    the centre vote and log half sizes and L2 on the doubled-angle heading (``tuples`` unused).

    Returns:
        ``{"loss": scalar, "pred": [B, S] seed classes (0 = background)}``.
    """
    out = model(batch)
    boxes = batch[model.label_name].to(model.device, non_blocking=True).float()
    cls, target = seed_targets(out["xyz"], boxes)
    target = _canonical(target)
    weight = torch.ones(model.classes + 1, device=cls.device)
    weight[0] = 0.5  # most seeds are floor and walls
    loss = F.cross_entropy(out["logits"].flatten(0, 1), cls.flatten(), weight=weight)
    fg = cls > 0
    if fg.any():
        angle = torch.stack([torch.cos(2 * target[..., 6]), torch.sin(2 * target[..., 6])], dim=-1)
        loss = loss + F.smooth_l1_loss(out["centre"][fg], target[..., :3][fg], beta=0.1) \
            + F.smooth_l1_loss(out["log_size"][fg], target[..., 3:6][fg].clamp_min(1e-3).log(), beta=0.1) \
            + 0.5 * F.mse_loss(out["heading2"][fg], angle[fg])
    return {"loss": loss, "pred": out["logits"].argmax(dim=-1).detach()}


def _axis_aligned_iou(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise 3D IoU ``[S, S]`` of the axis-aligned hulls of boxes ``[S, 7]`` (VoteNet's NMS boxes)."""
    cos, sin = torch.cos(boxes[:, 6]).abs(), torch.sin(boxes[:, 6]).abs()
    half = torch.stack([boxes[:, 3] * cos + boxes[:, 4] * sin, boxes[:, 3] * sin + boxes[:, 4] * cos,
                        boxes[:, 5]], dim=-1)
    low, high = boxes[:, :3] - half, boxes[:, :3] + half
    overlap = (torch.minimum(high[:, None], high[None]) - torch.maximum(low[:, None], low[None])).clamp_min(0)
    inter = overlap.prod(dim=-1)
    volume = (2 * half).prod(dim=-1)
    return inter / (volume[:, None] + volume[None] - inter).clamp_min(1e-9)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float, keep_max: int) -> list[int]:
    """Greedy same-class NMS in score order; indices of the kept boxes (at most ``keep_max``)."""
    overlap = (_axis_aligned_iou(boxes) > iou) & (classes[:, None] == classes[None])
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    kept: list[int] = []
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        if suppressed[i]:
            continue
        kept.append(i)
        if len(kept) == keep_max:
            break
        suppressed |= overlap[i]
    return kept


def _vote_boxes(out: dict[str, torch.Tensor], score: torch.Tensor, cls: torch.Tensor, radius: float) -> torch.Tensor:
    """Each seed's box ``[B, S, 7]`` averaged, weighted by score, over the same-class seeds whose centre votes
    land within ``radius`` of its own: VoteNet's vote clustering (0.3 m balls), done densely."""
    centre = out["centre"].float()
    near = (torch.cdist(centre, centre) < radius) & (cls[:, :, None] == cls[:, None, :])
    weight = near.float() * score[:, None, :]
    weight = weight / weight.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    angle = F.normalize(out["heading2"].float(), dim=-1)
    mean = weight @ torch.cat([centre, out["log_size"].float().clamp(-5, 3), angle], dim=-1)
    heading = 0.5 * torch.atan2(mean[..., 7], mean[..., 6])
    return torch.cat([mean[..., :3], mean[..., 3:6].exp(), heading[..., None]], dim=-1)


@torch.no_grad()
def predict(model: PointBoxes, batch: dict[str, Any]) -> torch.Tensor:
    """Detections ``[B, detections, 9]``: ``[cx, cy, cz, l, w, h, heading, class, score]`` per row, best first;
    unused rows have class -1 and score 0 (the input of :func:`mmdata.metrics.detection.detection_metrics`)."""
    out = model(batch)
    score, cls = out["logits"].float().softmax(dim=-1)[..., 1:].max(dim=-1)
    boxes = _vote_boxes(out, score, cls, VOTE_RADIUS)
    result = torch.zeros(*score.shape[:1], model.detections, 9, device=score.device)
    result[..., 7] = -1.0
    for b in range(len(boxes)):
        cand = torch.nonzero(score[b] > model.min_score).flatten().cpu()
        kept = cand[_nms(boxes[b, cand].cpu(), score[b, cand].cpu(), cls[b, cand].cpu(), model.nms_iou,
                         model.detections)]
        rows = torch.cat([boxes[b, kept], cls[b, kept, None].float(), score[b, kept, None]], dim=-1)
        result[b, :len(kept)] = rows
    return result


def embed(model: PointBoxes, batch: dict[str, Any]) -> torch.Tensor:
    """Scene embedding ``[B, hidden]``: the fused seed features max-pooled over the seeds."""
    _, feats = model.encode(batch)
    return feats[:, 0, feats.shape[-1] // 2:]
