"""Segmentation metrics: confusion, mIoU / pixel / mean accuracy on hand-computed maps, the 40 -> 13 table."""
from __future__ import annotations

import numpy as np
import pytest

from mmdata.metrics import METRICS
from mmdata.metrics.segmentation import NYU40_TO_13, confusion, scores, segmentation_metrics

# 2 x 4 maps: class 1 (wall), 2 (floor), 11 (picture); one void pixel in the truth (ignored).
TRUTH = np.array([[[1, 1, 1, 2], [2, 2, 11, 0]]])
PRED = np.array([[[1, 1, 2, 2], [2, 11, 11, 5]]])


def test_confusion_ignores_void_truth_and_counts_pairs():
    conf = confusion(PRED, TRUTH, 41)
    assert conf.sum() == 7  # 8 pixels, one void
    assert conf[1, 1] == 2 and conf[1, 2] == 1 and conf[2, 2] == 2 and conf[2, 11] == 1 and conf[11, 11] == 1
    assert conf[0].sum() == 0 and conf[:, 5].sum() == 0  # the prediction on the void pixel is not counted


def test_hand_computed_miou_pixel_and_mean_accuracy():
    m = segmentation_metrics(PRED, TRUTH)
    # IoU: wall 2 / (3 + 2 - 2) = 2/3; floor 2 / (3 + 3 - 2) = 1/2; picture 1 / (1 + 2 - 1) = 1/2
    assert m["miou40"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert m["pixel_acc40"] == pytest.approx(5 / 7)
    assert m["mean_acc40"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # 13 classes: wall -> 12, floor -> 5, picture -> 8; no merges among these three, so the same scores
    assert m["miou13"] == pytest.approx(m["miou40"]) and m["pixel_acc13"] == pytest.approx(m["pixel_acc40"])


def test_13_class_mapping_merges_classes():
    truth = np.array([1, 8, 29, 30])  # wall, door -> wall; box, whiteboard -> objects
    pred = np.array([8, 1, 30, 29])   # every 40-class prediction wrong, every 13-class one right
    m = segmentation_metrics(pred, truth)
    assert m["miou40"] == 0.0 and m["pixel_acc40"] == 0.0
    assert m["miou13"] == 1.0 and m["pixel_acc13"] == 1.0


def test_predicted_void_is_a_miss_and_classes_absent_everywhere_are_skipped():
    conf = confusion(np.array([0, 1]), np.array([1, 1]), 3)
    assert scores(conf) == {"miou": 0.5, "pixel_acc": 0.5, "mean_acc": 0.5}  # class 2 absent: not averaged
    assert scores(np.zeros((3, 3))) == {"miou": 0.0, "pixel_acc": 0.0, "mean_acc": 0.0}


def test_table_matches_couprie_13_classes_and_registry():
    assert NYU40_TO_13.shape == (41,) and NYU40_TO_13[0] == 0
    assert set(NYU40_TO_13[1:]) == set(range(1, 14))
    assert NYU40_TO_13[[1, 2, 22, 11, 25, 9, 4, 5, 6, 7, 23]].tolist() == [12, 5, 3, 8, 11, 13, 1, 4, 9, 10, 2]
    assert METRICS["segmentation"] is segmentation_metrics


def test_vectorised_confusion_matches_a_loop():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 41, (3, 7, 9)), rng.integers(0, 41, (3, 7, 9))
    loop = np.zeros((41, 41), dtype=np.int64)
    for t, p in zip(truth.ravel(), pred.ravel()):
        if t:
            loop[t, p] += 1
    np.testing.assert_array_equal(confusion(pred, truth, 41), loop)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="size"):
        segmentation_metrics(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="outside"):
        segmentation_metrics(np.full((2, 2), 41), np.ones((2, 2)))
