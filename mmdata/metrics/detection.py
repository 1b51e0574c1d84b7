"""3D detection metrics on oriented boxes, as VoteNet evaluates SUN RGB-D: mAP at 3D IoU 0.25 and 0.5.

Boxes follow VoteNet's convention in the upright depth frame (x right, y forward, z up, metres; corpora.md 8.3):
``[cx, cy, cz, l, w, h, heading]`` with HALF sizes. ``l`` lies along the heading direction, measured clockwise
from +x (VoteNet builds corners with ``rotz(-heading)``), so the box's local x axis is
``(cos heading, -sin heading)`` and its local y axis ``(sin heading, cos heading)``. Boxes rotate about z only.

3D IoU is VoteNet's ``box3d_iou``: bird's-eye-view intersection area of the two rotated rectangles (convex
polygon clipping, Sutherland-Hodgman) times the overlap of their z extents, over the union volume.

AP of one class (VoteNet's ``eval_det_cls``, itself VOC's): the class's detections of every scene sorted by
score (stable, so ties keep their input order); a detection is a true positive when its best-overlapping ground
truth box of that class in its scene has IoU strictly above the threshold and was not matched before, otherwise
a false positive. AP is the area under the precision envelope at every recall step (VOC 2010+ all-point
interpolation, VoteNet's ``voc_ap(use_07_metric=False)``). mAP averages the classes that have ground truth
(VoteNet iterates over the ground-truth classes): detections of a class absent from the truth are ignored.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

#: IoU thresholds reported, with their metric-name suffixes.
THRESHOLDS = {25: 0.25, 50: 0.5}


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """Bird's-eye-view corners of boxes, counter-clockwise.

    Args:
        boxes: ``[..., 7]`` boxes ``[cx, cy, cz, l, w, h, heading]`` (half sizes, VoteNet heading).

    Returns:
        ``[..., 4, 2]`` corner (x, y) coordinates.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    cos, sin = np.cos(boxes[..., 6]), np.sin(boxes[..., 6])
    axis_l = np.stack([cos, -sin], axis=-1) * boxes[..., 3:4]  # [..., 2]
    axis_w = np.stack([sin, cos], axis=-1) * boxes[..., 4:5]
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)  # CCW in the right-handed local frame
    offsets = signs[:, 0:1] * axis_l[..., None, :] + signs[:, 1:2] * axis_w[..., None, :]
    return boxes[..., None, 0:2] + offsets


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon ``[n, 2]`` by the shoelace formula (0 for fewer than 3 vertices)."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of polygon ``subject [n, 2]`` inside the convex CCW polygon ``clip [m, 2]``.

    Returns:
        ``[k, 2]`` vertices of the intersection (``k == 0`` when they do not overlap).
    """
    out = [tuple(p) for p in subject]
    for i in range(len(clip)):
        if not out:
            break
        p, q = clip[i], clip[(i + 1) % len(clip)]
        edge = q - p
        # Signed side of each vertex: >= 0 is on the left of edge p->q, i.e. inside a CCW polygon.
        side = [edge[0] * (v[1] - p[1]) - edge[1] * (v[0] - p[0]) for v in out]
        kept = []
        for j, (v, s) in enumerate(zip(out, side)):
            u, su = out[j - 1], side[j - 1]  # the previous vertex (wraps to the last)
            if (s >= 0) != (su >= 0):
                t = su / (su - s)
                kept.append((u[0] + t * (v[0] - u[0]), u[1] + t * (v[1] - u[1])))
            if s >= 0:
                kept.append(v)
        out = kept
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def box_iou_3d(a: np.ndarray, b: np.ndarray) -> float:
    """3D IoU of two oriented boxes ``[7]`` (see the module docstring for the convention)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dz = min(a[2] + a[5], b[2] + b[5]) - max(a[2] - a[5], b[2] - b[5])
    if dz <= 0:
        return 0.0
    area = polygon_area(clip_polygon(bev_corners(a), bev_corners(b)))
    inter = area * dz
    union = 8.0 * (a[3] * a[4] * a[5] + b[3] * b[4] * b[5]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise 3D IoU ``[n, m]`` of boxes ``a [n, 7]`` and ``b [m, 7]``.

    Pairs whose bird's-eye circumscribed circles or z extents do not meet are 0 without clipping, which
    keeps the Python-level clipping to the few pairs that can overlap.
    """
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 7), np.asarray(b, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    reach = np.hypot(a[:, 3], a[:, 4])[:, None] + np.hypot(b[:, 3], b[:, 4])[None, :]
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    gap_z = np.abs(a[:, None, 2] - b[None, :, 2]) - (a[:, None, 5] + b[None, :, 5])
    for i, j in zip(*np.nonzero((dist < reach) & (gap_z < 0))):
        out[i, j] = box_iou_3d(a[i], b[j])
    return out


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the monotone precision envelope (VoteNet ``voc_ap(use_07_metric=False)``).

    Args:
        recall, precision: ``[d]`` cumulative values after each detection, in score order.
    """
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope: max precision at any higher recall
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def class_ap(detections: list[tuple[int, float, np.ndarray]], truth: dict[int, np.ndarray],
             threshold: float) -> tuple[float, float]:
    """AP and final recall of one class.

    Args:
        detections: ``(scene, score, box [7])`` of this class over all scenes.
        truth: scene -> ground-truth boxes ``[m, 7]`` of this class (at least one box overall).
        threshold: IoU a match must exceed.

    Returns:
        ``(ap, recall)``; both 0.0 when there are no detections.
    """
    positives = sum(len(boxes) for boxes in truth.values())
    if not detections or positives == 0:
        return 0.0, 0.0
    order = np.argsort([-score for _, score, _ in detections], kind="stable")
    taken = {scene: np.zeros(len(boxes), dtype=bool) for scene, boxes in truth.items()}
    hits = np.zeros(len(order))
    for rank, d in enumerate(order):
        scene, _, box = detections[d]
        gt = truth.get(scene)
        if gt is None or not len(gt):
            continue
        ious = iou_matrix(box[None], gt)[0]
        best = int(np.argmax(ious))
        if ious[best] > threshold and not taken[scene][best]:
            taken[scene][best] = True
            hits[rank] = 1.0
    tp = np.cumsum(hits)
    recall = tp / positives
    precision = tp / np.arange(1, len(order) + 1)
    return average_precision(recall, precision), float(recall[-1])


def _group(pred: np.ndarray, truth: np.ndarray) -> tuple[dict, dict]:
    """Per class: detections ``[(scene, score, box)]`` and ``{scene: boxes [m, 7]}``; class < 0 rows dropped."""
    dets: dict[int, list] = defaultdict(list)
    gts: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for scene in range(len(truth)):
        for row in pred[scene]:
            if row[7] >= 0:
                dets[int(row[7])].append((scene, float(row[8]), row[:7]))
        for row in truth[scene]:
            if row[7] >= 0:
                gts[int(row[7])][scene].append(row[:7])
    boxes = {c: {s: np.asarray(b) for s, b in per.items()} for c, per in gts.items()}
    return dets, boxes


def detection_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """mAP and mean recall at 3D IoU 0.25 and 0.5 over oriented boxes.

    Args:
        pred: ``[N, K, 9]`` per scene: ``[box 7, class, score]``; rows with class < 0 are padding.
        truth: ``[N, M, 8]`` per scene: ``[box 7, class]`` (the ``label`` field); class < 0 rows are padding.

    Returns:
        ``map25``, ``map50`` (mean AP over the classes with ground truth) and ``recall25``, ``recall50``
        (mean over the same classes of the recall reached with every detection); all 0.0 without truth boxes.
    """
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[2] != 9 or truth.ndim != 3 or truth.shape[2] != 8 or len(pred) != len(truth):
        raise ValueError(f"expected pred [N, K, 9] and truth [N, M, 8], got {pred.shape} and {truth.shape}")
    dets, gts = _group(pred, truth)
    out = {}
    for suffix, threshold in THRESHOLDS.items():
        scores = [class_ap(dets.get(c, []), gts[c], threshold) for c in sorted(gts)]
        out[f"map{suffix}"] = float(np.mean([s[0] for s in scores])) if scores else 0.0
        out[f"recall{suffix}"] = float(np.mean([s[1] for s in scores])) if scores else 0.0
    return out
