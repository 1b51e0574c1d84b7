"""Methods: encoders chosen from Field, late fusion shapes, masking, unimodal runs, the loop and checkpoints."""
from __future__ import annotations

import pytest
import torch

from methods import METHODS, get_method, late_fusion
from methods.blocks import ImageEncoder, SequenceEncoder, VectorEncoder, build_encoder, field_input
from methods.text import TextEncoder
from methods.loop import evaluate, fit, load_checkpoint, save_checkpoint
from mmdata.types import Field

AVMNIST = {
    "image": Field("float32", (28, 28), "npy"),
    "audio_spec": Field("uint8", (112, 112), "png"),
    "label": Field("int64", (), "cls", classes=tuple(str(i) for i in range(10))),
}
MOSI = {
    "feat_text": Field("float32", (50, 768), "npy"),
    "feat_audio": Field("float32", (None, 5), "npy"),
    "feat_vision": Field("float32", (50, 20), "npy"),
    "text": Field("str", (), "txt"),
    "label": Field("float32", (), "json", value_range=(-3.0, 3.0)),
}


def fake_batch(features, size, seed=0, lengths=None):
    """A batch dict per the mmdata.load contract: [B, *shape] tensors, padded variable fields with masks."""
    g = torch.Generator().manual_seed(seed)
    batch = {"__key__": [f"fake/train/{seed}-{i}" for i in range(size)]}
    for name, f in features.items():
        if f.dtype == "str":
            batch[name] = [f"text {i}" for i in range(size)]
        elif name == "label":
            batch[name] = (torch.randint(len(f.classes), (size,), generator=g) if f.classes
                           else torch.rand(size, generator=g) * 6 - 3)
        elif f.variable_axes:
            lens = torch.as_tensor(lengths) if lengths is not None else torch.randint(1, 12, (size,), generator=g)
            x = torch.randn(size, int(lens.max()), *f.shape[1:], generator=g)
            mask = torch.arange(x.shape[1])[None, :] < lens[:, None]
            batch[name], batch[f"{name}_lengths"], batch[f"{name}_mask"] = x * mask[..., None], lens, mask
        elif f.dtype == "uint8":
            batch[name] = torch.randint(0, 256, (size, *f.shape), generator=g, dtype=torch.uint8)
        else:
            batch[name] = torch.randn(size, *f.shape, generator=g)
    return batch


def test_build_encoder_picks_by_shape_and_modality():
    assert isinstance(build_encoder("image", AVMNIST["image"], 8), ImageEncoder)
    assert isinstance(build_encoder("audio_spec", AVMNIST["audio_spec"], 8), ImageEncoder)
    rgb = build_encoder("image", Field("uint8", (32, 32, 3), "jpg"), 8)
    assert isinstance(rgb, ImageEncoder) and rgb(torch.rand(2, 32, 32, 3)).shape == (2, 8)
    assert isinstance(build_encoder("feat_text", MOSI["feat_text"], 8), SequenceEncoder)
    assert isinstance(build_encoder("feat_audio", MOSI["feat_audio"], 8), SequenceEncoder)
    assert isinstance(build_encoder("feat_pooled", Field("float32", (7,), "npy"), 8), VectorEncoder)
    assert isinstance(build_encoder("text", MOSI["text"], 8), TextEncoder)  # hashed n-grams, no download
    with pytest.raises(ValueError):
        build_encoder("label", MOSI["label"], 8)
    with pytest.raises(ValueError, match="image_size"):
        build_encoder("image", Field("uint8", (None, None, 3), "jpg"), 8)


def test_field_input_scales_uint8_and_builds_mask_from_lengths():
    x, mask = field_input({"audio_spec": torch.full((2, 112, 112), 255, dtype=torch.uint8)}, "audio_spec",
                          AVMNIST["audio_spec"])
    assert x.dtype == torch.float32 and float(x.max()) == 1.0 and mask is None
    batch = fake_batch({"feat_audio": MOSI["feat_audio"]}, 3, lengths=[2, 5, 1])
    expected = batch.pop("feat_audio_mask")
    _, mask = field_input(batch, "feat_audio", MOSI["feat_audio"])
    assert torch.equal(mask, expected)


def test_avmnist_shapes():
    model = late_fusion.build_model(AVMNIST, fields=["image", "audio_spec"], dim=16, hidden=32)
    batch = fake_batch(AVMNIST, 4)
    assert model(batch).shape == (4, 10)
    step = late_fusion.training_step(model, batch)
    assert step["loss"].dim() == 0 and step["pred"].shape == (4,) and step["pred"].dtype == torch.int64
    prob = late_fusion.predict(model, batch)  # class probabilities: metrics argmax them, AUROC ranks them
    assert prob.shape == (4, 10) and torch.allclose(prob.sum(dim=1), torch.ones(4))
    assert late_fusion.embed(model, batch).shape == (4, 32)


def test_mosi_shapes():
    model = late_fusion.build_model(MOSI, fields=["feat_text", "feat_audio", "feat_vision"], dim=16, hidden=24)
    batch = fake_batch(MOSI, 5)
    assert model(batch).shape == (5,)
    step = late_fusion.training_step(model, batch)
    assert step["loss"].dim() == 0 and step["pred"].shape == (5,) and step["pred"].dtype == torch.float32
    assert late_fusion.embed(model, batch).shape == (5, 24)


def test_unimodal_reads_only_its_field():
    model = late_fusion.build_model(AVMNIST, fields=["image"], dim=8, hidden=16).eval()
    assert list(model.encoders) == ["image"]
    batch = fake_batch(AVMNIST, 3)
    out = model(batch)
    batch["audio_spec"] = torch.zeros_like(batch["audio_spec"])
    assert torch.equal(model(batch), out)
    del batch["audio_spec"]
    assert torch.equal(model(batch), out)


def test_padded_steps_do_not_change_the_output():
    model = late_fusion.build_model(MOSI, fields=["feat_audio", "feat_vision"], dim=8, hidden=16).eval()
    batch = fake_batch(MOSI, 4, lengths=[3, 7, 1, 5])
    out = model(batch)
    noisy = dict(batch)
    pad = ~batch["feat_audio_mask"]
    noisy["feat_audio"] = torch.where(pad[..., None], torch.randn_like(batch["feat_audio"]) * 100, batch["feat_audio"])
    longer = torch.cat([noisy["feat_audio"], torch.full((4, 3, 5), 50.0)], dim=1)  # more padding at the end
    noisy["feat_audio"], noisy["feat_audio_mask"] = longer, torch.cat([batch["feat_audio_mask"],
                                                                       torch.zeros(4, 3, dtype=torch.bool)], 1)
    assert torch.allclose(model(noisy), out, atol=1e-6)


def test_build_model_rejects_bad_fields():
    with pytest.raises(ValueError, match="unknown"):
        late_fusion.build_model(AVMNIST, fields=["image", "depth"])
    with pytest.raises(ValueError):
        late_fusion.build_model(AVMNIST, fields=[])


def test_registry():
    assert get_method("late_fusion") is late_fusion and "late_fusion" in METHODS
    with pytest.raises(ValueError, match="late_fusion"):
        get_method("nope")


class Epochs(list):
    """A re-iterable batch list that records set_epoch calls."""

    epochs: list[int]

    def set_epoch(self, epoch):
        self.__dict__.setdefault("epochs", []).append(epoch)


SMALL = {
    "image": Field("uint8", (8, 8), "png"),
    "feat_audio": Field("float32", (None, 3), "npy"),
    "label": Field("int64", (), "cls", classes=("a", "b")),
}


def separable_batches(n_batches, size=16, seed=0):
    """Label = class shifts both the image brightness and the audio features: easy to separate."""
    out = Epochs()
    for b in range(n_batches):
        batch = fake_batch(SMALL, size, seed=seed + b)
        y = batch["label"]
        batch["image"] = (y[:, None, None] * 150 + torch.randint(0, 100, (size, 8, 8))).to(torch.uint8)
        batch["feat_audio"] = batch["feat_audio"] + (2.0 * y - 1)[:, None, None] * batch["feat_audio_mask"][..., None]
        out.append(batch)
    return out


def test_fit_reduces_loss_and_restores_best():
    torch.manual_seed(0)
    model = late_fusion.build_model(SMALL, fields=["image", "feat_audio"], dim=8, hidden=16)
    train, valid = separable_batches(4), separable_batches(2, seed=100)
    logs = []
    hist = fit(late_fusion, model, train, epochs=6, lr=1e-2, device="cpu", valid_batches=valid, log=logs.append)
    assert train.epochs == list(range(6)) and len(logs) == 7
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert set(hist) >= {"train_loss", "valid_loss", "seconds", "samples_per_s", "best_epoch"}
    pred, truth, keys = evaluate(late_fusion, model, valid)
    assert pred.shape == (32, 2) and truth.shape == (32,) and keys == [k for b in valid for k in b["__key__"]]
    assert (pred.argmax(axis=1) == truth).mean() > 0.9
    model.train()
    evaluate(late_fusion, model, valid)
    assert model.training  # evaluate restores the mode it found


def test_fit_regression_and_bf16_amp_on_cpu():
    torch.manual_seed(0)
    model = late_fusion.build_model(MOSI, fields=["feat_vision"], dim=8, hidden=16)
    batches = [fake_batch(MOSI, 8, seed=s) for s in range(3)]
    for b in batches:  # the target is a linear read-out of the vision features
        b["label"] = b["feat_vision"].mean(dim=(1, 2)) * 20
    hist = fit(late_fusion, model, batches, epochs=8, lr=1e-2, device="cpu", amp=True, log=lambda s: None)
    assert hist["amp"] == "bfloat16" and hist["best_epoch"] is None
    assert hist["train_loss"][-1] < hist["train_loss"][0]


def test_checkpoint_round_trip(tmp_path):
    model = late_fusion.build_model(AVMNIST, fields=["image", "audio_spec"], dim=8, hidden=16).eval()
    batch = fake_batch(AVMNIST, 3)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, {"method": "late_fusion", "epoch": 3})
    other = late_fusion.build_model(AVMNIST, fields=["image", "audio_spec"], dim=8, hidden=16).eval()
    assert load_checkpoint(path, other) == {"method": "late_fusion", "epoch": 3}
    assert torch.equal(other(batch), model(batch))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    again = save_checkpoint(tmp_path / "again" / "model.pt", model, {"method": "late_fusion", "epoch": 3})
    assert again.read_bytes() == path.read_bytes()  # same weights, same bytes: DVC sees no change


def test_gru_sequence_encoder_respects_lengths():
    model = late_fusion.build_model(MOSI, fields=["feat_audio"], dim=8, hidden=16, sequence="gru").eval()
    batch = fake_batch(MOSI, 3, lengths=[2, 6, 4])
    out = model(batch)
    batch["feat_audio"] = batch["feat_audio"] + 9.0 * ~batch["feat_audio_mask"][..., None]
    assert torch.allclose(model(batch), out, atol=1e-6)
