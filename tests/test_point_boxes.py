"""point_boxes: shapes of forward / predict / embed, seed targets on a hand box, NMS, learning, the loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods import METHODS, point_boxes
from methods.loop import evaluate, fit
from mmdata.metrics.detection import detection_metrics
from mmdata.types import Field

N, M = 128, 4
FEATURES = {
    "points": Field("float32", (N, 3), "npy"),
    "points_rgb": Field("float32", (N, 3), "npy", value_range=(0.0, 1.0)),
    "points_height": Field("float32", (N, 1), "npy"),
    "label": Field("float32", (M, 8), "npy"),
    "meta_scene": Field("str", (), "txt"),
}
SMALL = {"dim": 16, "hidden": 32, "seeds": 32, "neighbours": 8, "classes": 3, "detections": 5}


def scene_batch(size: int, seed: int = 0) -> dict:
    """Scenes of floor points plus one box per scene whose class is its colour (red 0, green 1, blue 2)."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(size, N, 3, generator=g) * torch.tensor([4.0, 4.0, 0.0]) + torch.tensor([-2.0, 1.0, -1.0])
    rgb = torch.full((size, N, 3), 0.5)
    label = torch.zeros(size, M, 8)
    label[:, :, 7] = -1
    for b in range(size):
        cls = int(torch.randint(3, (1,), generator=g))
        centre = torch.tensor([float(torch.rand(1, generator=g)) * 2 - 1, 2.5, -0.6])
        on_box = torch.rand(N // 4, 3, generator=g) * torch.tensor([0.8, 0.6, 0.8]) - torch.tensor([0.4, 0.3, 0.4])
        points[b, :N // 4] = centre + on_box
        rgb[b, :N // 4] = torch.eye(3)[cls]
        label[b, 0] = torch.tensor([*centre.tolist(), 0.4, 0.3, 0.4, 0.0, float(cls)])
    return {"__key__": [f"toy/train/{seed}-{i}" for i in range(size)], "points": points, "points_rgb": rgb,
            "points_height": points[..., 2:] + 1.0, "label": label}


def test_registered_and_requires_geometry():
    assert METHODS["point_boxes"] is point_boxes
    with pytest.raises(ValueError, match="must include 'points'"):
        point_boxes.build_model(FEATURES, fields=["points_rgb"])
    with pytest.raises(ValueError, match="per-point fields"):
        point_boxes.build_model(FEATURES, fields=["points", "meta_scene"])


def test_forward_predict_embed_shapes():
    model = point_boxes.build_model(FEATURES, fields=["points", "points_rgb", "points_height"], **SMALL).eval()
    batch = scene_batch(3)
    out = model(batch)
    assert out["xyz"].shape == (3, 32, 3) and out["logits"].shape == (3, 32, 4)
    assert out["centre"].shape == out["log_size"].shape == (3, 32, 3) and out["heading2"].shape == (3, 32, 2)
    pred = point_boxes.predict(model, batch)
    assert pred.shape == (3, 5, 9)
    padding = pred[..., 7] < 0
    assert (pred[..., 8][padding] == 0).all() and ((pred[..., 8] > 0) | padding).all()
    assert point_boxes.embed(model, batch).shape == (3, 32)
    loss = point_boxes.training_step(model, batch)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_seed_targets_pick_the_smallest_box_containing_the_seed():
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 2.0, 1.0, 1.0, math.pi / 2, 1.0],   # long side along -y
                           [0.0, 1.5, 0.0, 0.5, 0.5, 0.5, 0.0, 2.0],
                           [0.0, 0.0, 0.0, 9.0, 9.0, 9.0, 0.0, -1.0]]])        # padding: never a target
    xyz = torch.tensor([[[0.0, 1.8, 0.0], [0.9, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.6, 0.3], [5.0, 5.0, 5.0]]])
    cls, target = point_boxes.seed_targets(xyz, boxes)
    assert cls.tolist() == [[3, 2, 0, 3, 0]]  # (0, 1.8, 0) lies in both: the small box wins
    torch.testing.assert_close(target[0, 3], boxes[0, 1, :7])


def test_canonical_boxes_have_l_at_least_w():
    box = torch.tensor([[0.0, 0.0, 0.0, 0.3, 0.8, 0.5, 0.2]])
    out = point_boxes._canonical(box)
    torch.testing.assert_close(out[0, 3:6], torch.tensor([0.8, 0.3, 0.5]))
    assert out[0, 6].item() == pytest.approx(0.2 + math.pi / 2)


def test_nms_keeps_the_best_of_overlapping_same_class_boxes():
    boxes = torch.tensor([[0.0, 0, 0, 1, 1, 1, 0], [0.1, 0, 0, 1, 1, 1, 0], [0.1, 0, 0, 1, 1, 1, 0],
                          [5.0, 0, 0, 1, 1, 1, 0]])
    kept = point_boxes._nms(boxes, torch.tensor([0.5, 0.9, 0.8, 0.1]), torch.tensor([0, 0, 1, 0]), 0.25, 10)
    assert kept == [1, 2, 3]
    iou = point_boxes._axis_aligned_iou(torch.tensor([[0.0, 0, 0, 1, 1, 1, math.pi / 4]]))
    assert iou.item() == pytest.approx(1.0)


def test_fit_learns_colour_coded_boxes_and_evaluate_feeds_the_metric():
    torch.manual_seed(0)
    model = point_boxes.build_model(FEATURES, fields=["points", "points_rgb"], **SMALL)
    train = [scene_batch(8, seed=s) for s in range(3)]
    hist = fit(point_boxes, model, train, epochs=20, lr=1e-2, device="cpu", log=lambda s: None)
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    test = [scene_batch(8, seed=100), scene_batch(5, seed=101)]
    pred, truth, keys = evaluate(point_boxes, model, test)
    assert pred.shape == (13, 5, 9) and truth.shape == (13, M, 8) and len(keys) == 13
    assert detection_metrics(pred, truth)["map25"] > 0.5
    np.testing.assert_array_equal(truth[:8], test[0]["label"].numpy())
