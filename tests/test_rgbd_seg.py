"""RGB-D segmentation method: shapes, input scaling, void handling, fusion variants, training; late fusion's
regression loss option (MSE for the stocks)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from methods import get_method, late_fusion, rgbd_seg
from methods.losses import median_frequency_weights
from methods.loop import evaluate, fit
from mmdata.types import Field

H, W = 12, 16
NYU = {
    "image": Field("uint8", (H, W, 3), "png"),
    "depth": Field("uint16", (H, W), "png"),
    "normal": Field("uint8", (H, W, 3), "png"),
    "label": Field("uint8", (H, W), "png", classes=("void", "wall", "floor", "box")),
}


def batch(size: int = 2, seed: int = 0) -> dict:
    """Class 3 (box) is where depth is small: only the depth map tells it from class 1; void on row 0."""
    g = torch.Generator().manual_seed(seed)
    depth = torch.randint(2500, 4000, (size, H, W), generator=g)
    label = torch.ones(size, H, W, dtype=torch.uint8)
    label[:, H // 2:] = 2
    for i in range(size):
        top, left = int(torch.randint(0, H - 4, (1,), generator=g)), int(torch.randint(0, W - 4, (1,), generator=g))
        depth[i, top:top + 4, left:left + 4] = 1200
        label[i, top:top + 4, left:left + 4] = 3
    label[:, 0] = 0
    return {"__key__": [f"t/train/{seed}-{i}" for i in range(size)],
            "image": torch.randint(0, 256, (size, H, W, 3), generator=g, dtype=torch.uint8),
            "depth": depth.to(torch.uint16), "normal": torch.full((size, H, W, 3), 128, dtype=torch.uint8),
            "label": label}


@pytest.mark.parametrize("fusion", ["multiscale", "early"])
def test_shapes_predictions_and_embedding(fusion):
    model = rgbd_seg.build_model(NYU, fields=["image", "depth", "normal"], width=4, fusion=fusion).eval()
    b = batch(3)
    assert model(b).shape == (3, 4, H, W)
    pred = rgbd_seg.predict(model, b)
    assert pred.shape == (3, H, W) and pred.dtype == torch.uint8 and pred.min() >= 1  # void never predicted
    assert rgbd_seg.embed(model, b).shape == (3, 16)
    step = rgbd_seg.training_step(model, b)
    assert step["loss"].dim() == 0 and step["pred"].shape == (3, H, W)


def test_inputs_are_scaled_by_modality():
    b = batch(1)
    b["depth"][:] = 2500
    b["normal"][:] = 255
    assert torch.allclose(rgbd_seg.planes(b, "depth", NYU["depth"], torch.device("cpu")), torch.tensor(2.5))
    assert torch.allclose(rgbd_seg.planes(b, "normal", NYU["normal"], torch.device("cpu")), torch.tensor(1.0))
    assert rgbd_seg.planes(b, "image", NYU["image"], torch.device("cpu")).shape == (1, 3, H, W)


def test_void_pixels_do_not_change_the_loss():
    torch.manual_seed(0)
    model = rgbd_seg.build_model(NYU, fields=["depth"], width=4, balance=False).eval()
    b = batch(2)
    logits = model(b)
    expected = F.cross_entropy(logits[:, :, 1:], b["label"][:, 1:].long())  # row 0 is void
    assert torch.allclose(rgbd_seg.training_step(model, b)["loss"], expected, atol=1e-6)
    model.balance = True
    weight = median_frequency_weights(b["label"].long(), 4)
    expected = F.cross_entropy(logits[:, :, 1:], b["label"][:, 1:].long(), weight=weight)
    assert torch.allclose(rgbd_seg.training_step(model, b)["loss"], expected, atol=1e-6)


def test_median_frequency_weights():
    target = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3])  # void 2, then 6 / 3 / 1 labelled pixels
    weight = median_frequency_weights(target, 5)
    # frequencies 0.6, 0.3, 0.1 -> median 0.3; void and the absent class 4 weigh nothing
    assert torch.allclose(weight, torch.tensor([0.0, 0.5, 1.0, 3.0, 0.0]))


def test_unimodal_model_reads_only_its_field():
    model = rgbd_seg.build_model(NYU, fields=["depth"], width=4).eval()
    b = batch(2)
    out = model(b)
    del b["image"], b["normal"]
    assert torch.equal(model(b), out) and list(model.encoders) == ["depth"]


def test_build_model_rejects_bad_configurations():
    with pytest.raises(ValueError, match="unknown"):
        rgbd_seg.build_model(NYU, fields=["points"])
    with pytest.raises(ValueError, match="fusion"):
        rgbd_seg.build_model(NYU, fields=["image"], fusion="sum")
    with pytest.raises(ValueError, match="sizes"):
        rgbd_seg.build_model({**NYU, "depth": Field("uint16", (6, 8), "png")}, fields=["image", "depth"])
    assert get_method("rgbd_seg") is rgbd_seg


def test_fit_learns_a_class_only_depth_separates():
    torch.manual_seed(0)
    model = rgbd_seg.build_model(NYU, fields=["depth"], width=6)
    train, valid = [batch(4, seed=s) for s in range(4)], [batch(4, seed=100)]
    hist = fit(rgbd_seg, model, train, epochs=12, lr=0.01, device="cpu", valid_batches=valid, log=lambda s: None)
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    pred, truth, _ = evaluate(rgbd_seg, model, valid)
    assert pred.shape == truth.shape == (4, H, W)
    box = truth == 3
    assert (pred[box] == 3).mean() > 0.7


def test_late_fusion_regression_loss_option():
    features = {"series_a": Field("float32", (5, 3), "npy"), "label": Field("float32", (), "npy")}
    b = {"__key__": ["k0", "k1"], "series_a": torch.randn(2, 5, 3), "label": torch.tensor([0.5, 2.0])}
    model = late_fusion.build_model(features, fields=["series_a"], regression_loss="mse", dim=4, hidden=8).eval()
    out = model(b)
    assert torch.allclose(late_fusion.training_step(model, b)["loss"], F.mse_loss(out, b["label"]))
    default = late_fusion.build_model(features, fields=["series_a"], dim=4, hidden=8).eval()
    assert torch.allclose(late_fusion.training_step(default, b)["loss"], F.l1_loss(default(b), b["label"]))
    with pytest.raises(ValueError, match="regression_loss"):
        late_fusion.build_model(features, fields=["series_a"], regression_loss="huber")
