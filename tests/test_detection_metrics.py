"""3D detection metrics: oriented-box IoU and VOC all-point AP on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmdata.metrics import METRICS
from mmdata.metrics.detection import (average_precision, bev_corners, box_iou_3d, class_ap, clip_polygon,
                                      detection_metrics, iou_matrix, polygon_area)

UNIT = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])  # a 2 m cube at the origin (half sizes 1)


def box(cx=0.0, cy=0.0, cz=0.0, l=1.0, w=1.0, h=1.0, heading=0.0) -> np.ndarray:
    return np.array([cx, cy, cz, l, w, h, heading])


def test_corners_follow_votenet_heading_clockwise_from_x():
    corners = bev_corners(box(l=2.0, w=0.5, heading=math.pi / 2))
    # l lies along (cos h, -sin h) = (0, -1): the long side runs along y.
    np.testing.assert_allclose(np.sort(corners[:, 1]), [-2, -2, 2, 2], atol=1e-12)
    np.testing.assert_allclose(np.sort(corners[:, 0]), [-0.5, -0.5, 0.5, 0.5], atol=1e-12)
    assert polygon_area(corners) == pytest.approx(4.0)
    small = bev_corners(box(l=1.0, w=0.1, heading=0.3))
    x, y = small[:, 0], small[:, 1]
    assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0  # counter-clockwise


@pytest.mark.parametrize("other, expected", [
    (UNIT, 1.0),                                             # identical
    (box(cx=1.0), 1.0 / 3.0),                                # shifted by a half: V/2 over 3V/2
    (box(cz=1.0), 1.0 / 3.0),                                # half the height overlaps
    (box(heading=math.pi / 2), 1.0),                         # a square turned 90 degrees is itself
    (box(heading=math.pi / 4), 1.0 / math.sqrt(2.0)),        # octagon 8(sqrt2 - 1) over 8 - that
    (box(cx=2.5), 0.0),                                      # disjoint in x
    (box(cz=2.0), 0.0),                                      # touching faces in z
    (box(l=0.5, w=0.5, h=0.5), 1.0 / 8.0),                   # nested: small volume over the big one
])
def test_box_iou_hand_cases(other, expected):
    assert box_iou_3d(UNIT, other) == pytest.approx(expected, abs=1e-9)
    assert box_iou_3d(other, UNIT) == pytest.approx(expected, abs=1e-9)


def test_rotated_rectangle_equals_its_swapped_twin():
    a = box(l=2.0, w=0.5, heading=math.pi / 2)
    b = box(l=0.5, w=2.0, heading=0.0)
    assert box_iou_3d(a, b) == pytest.approx(1.0)
    assert box_iou_3d(a, box(l=2.0, w=0.5, heading=-math.pi / 2)) == pytest.approx(1.0)


def test_clip_polygon_matches_a_hand_computed_overlap():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], dtype=float)
    shifted = square + [1, 1]
    overlap = clip_polygon(shifted, square)
    assert polygon_area(overlap) == pytest.approx(1.0)
    assert clip_polygon(square + [5, 0], square).shape == (0, 2)


def test_iou_matrix_matches_pairwise_loop():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(-2, 2, (6, 3)), rng.uniform(0.2, 1, (6, 3)), rng.uniform(-3, 3, 6)])
    b = np.column_stack([rng.uniform(-2, 2, (5, 3)), rng.uniform(0.2, 1, (5, 3)), rng.uniform(-3, 3, 5)])
    loop = np.array([[box_iou_3d(x, y) for y in b] for x in a])
    np.testing.assert_allclose(iou_matrix(a, b), loop)
    assert (loop > 0).any()


def test_average_precision_all_point():
    # TP, FP, TP over two positives: envelope 1 up to recall 0.5, then 2/3 up to recall 1.
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2.0 / 3.0])
    assert average_precision(recall, precision) == pytest.approx(0.5 + 0.5 * 2.0 / 3.0)
    assert average_precision(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)


def test_class_ap_matches_each_truth_once_in_score_order():
    truth = {0: np.stack([box(), box(cx=5.0)])}
    dets = [(0, 0.9, box()), (0, 0.8, box(cx=20.0)), (0, 0.7, box(cx=5.0)), (0, 0.6, box(cx=5.05))]
    ap, recall = class_ap(dets, truth, 0.25)
    # TP, FP, TP, duplicate FP: the duplicate comes after full recall, so AP = 0.5 * 1 + 0.5 * 2/3.
    assert ap == pytest.approx(0.5 + 1.0 / 3.0) and recall == 1.0
    assert class_ap([], truth, 0.25) == (0.0, 0.0)


def _pad(rows, width, size=4):
    out = np.full((size, width), 0.0)
    out[:, 7] = -1
    if len(rows):
        out[:len(rows)] = rows
    return out


def test_detection_metrics_thresholds_and_classes():
    truth = np.stack([_pad([np.r_[UNIT, 2]], 8), _pad([np.r_[box(cx=3.0), 5]], 8)])
    pred = np.stack([_pad([np.r_[box(cx=1.0), 2, 0.9]], 9),           # IoU 1/3: a hit at 0.25, a miss at 0.5
                     _pad([np.r_[box(cx=3.0), 5, 0.8], np.r_[UNIT, 7, 0.99]], 9)])  # class 7 has no truth
    metrics = detection_metrics(pred, truth)
    assert metrics == {"map25": 1.0, "map50": 0.5, "recall25": 1.0, "recall50": 0.5}
    assert METRICS["detection"] is detection_metrics
    empty = detection_metrics(pred, np.stack([_pad([], 8), _pad([], 8)]))
    assert empty["map25"] == 0.0
    with pytest.raises(ValueError, match="expected pred"):
        detection_metrics(pred[..., :8], truth)
