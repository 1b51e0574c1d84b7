"""``augment: {batched: true}``: the loader does not augment; each batch is moved to the training device and
augmented there with the same draws, so the training step receives the batches of the per-sample path."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mmdata
from methods import late_fusion
from methods.loop import fit
from mmdata.augment import Augmenter
from mmdata.augment.batched import DeviceAugmented, augment_on, loader_rngs
from mmdata.errors import ConfigError
from mmdata.rng import make_rng
from mmdata.shards.collate import collate
from mmdata.types import Field
from pipelines import train as train_stage

FIELDS = ["image", "feat_audio", "text"]
INPUTS = [*FIELDS, "label"]


def _augmenter(features) -> Augmenter:
    """Every default op of the toy fields (image geometry, jitter, noise; feat noise, time mask; text dropout
    and swap), at a strength that changes every sample."""
    return Augmenter.from_features({n: features[n] for n in FIELDS}, strength=0.8)


def _steps(batches, features, epochs: int = 2) -> list[dict]:
    """The batches a training step receives over ``epochs`` of :func:`methods.loop.fit` (late fusion, CPU)."""
    torch.manual_seed(0)
    model = late_fusion.build_model(features, fields=["image", "feat_audio"], dim=4, hidden=8)
    seen: list[dict] = []

    def training_step(model, batch, tuples=None):
        seen.append(dict(batch))
        return late_fusion.training_step(model, batch, tuples)

    method = SimpleNamespace(training_step=training_step, predict=late_fusion.predict)
    fit(method, model, batches, epochs=epochs, lr=1e-3, device="cpu", seed=5, log=lambda line: None)
    return seen


def _assert_same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a.keys() == b.keys() and a["__key__"] == b["__key__"] and a["text"] == b["text"]
        for name, value in b.items():
            if isinstance(value, torch.Tensor):
                assert a[name].dtype == value.dtype and a[name].device.type == "cpu"
                # augment_batch's promise: float32 rounding; uint8 may differ by one level (jitter's mean luma)
                tol = 1 if not value.dtype.is_floating_point and value.dtype != torch.bool else 1e-5
                torch.testing.assert_close(a[name].double(), value.double(), atol=tol, rtol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_steps_equal_per_sample_steps_for_two_epochs(toy_split, workers):
    plain = mmdata.load(toy_split, fields=INPUTS, batch_size=6, seed=4)
    features, augmenter = plain.shards.features, _augmenter(plain.shards.features)
    per_sample = mmdata.load(toy_split, fields=INPUTS, batch_size=6, seed=4, num_workers=workers, augment=augmenter)
    expected = _steps(per_sample, features)
    got = _steps(DeviceAugmented(plain, augmenter, "cpu"), features)
    _assert_same(got, expected)
    unaugmented = _steps(mmdata.load(toy_split, fields=INPUTS, batch_size=6, seed=4), features)
    assert [b["__key__"] for b in unaugmented] == [b["__key__"] for b in got]
    assert all(not torch.equal(a["image"], b["image"]) for a, b in zip(got, unaugmented))
    assert sum(a["text"] != b["text"] for a, b in zip(got, unaugmented)) > len(got) // 2


def test_set_epoch_changes_the_draws_and_keeps_the_rest_of_the_loader(toy_split):
    loader = mmdata.load(toy_split, fields=INPUTS, batch_size=8, seed=2, shuffle=False)
    batches = DeviceAugmented(loader, _augmenter(loader.shards.features), torch.device("cpu"))
    assert len(batches) == len(loader) == 5 and batches.shards is loader.shards
    first, again = list(batches), list(batches)
    batches.set_epoch(1)
    assert loader.epoch == 1 and batches.state_dict()["epoch"] == 1
    second = list(batches)
    assert [b["__key__"] for b in first] == [b["__key__"] for b in second]  # unshuffled: same rows per batch
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert all(not torch.equal(a["image"], b["image"]) for a, b in zip(first, second))


def test_a_loader_that_augments_already_is_refused(toy_split):
    augmenter = _augmenter(mmdata.load(toy_split, batch_size=1).shards.features)
    loader = mmdata.load(toy_split, fields=INPUTS, batch_size=8, augment=augmenter)
    with pytest.raises(ValueError, match="already augments"):
        DeviceAugmented(loader, augmenter, "cpu")


AV = {"audio": Field("float32", (None,), "npy"), "video": Field("uint8", (None, 4, 4, 3), "npy"),
      "label": Field("int64", (), "cls", classes=("a", "b"))}


def test_a_length_changing_policy_is_refused_with_batched_naming_field_and_op():
    exp = {"corpus": "av", "fields": ["audio", "video"],
           "augment": {"policy": {"audio": ["timecrop", "noise"], "video": ["crop"]}, "batched": True}}
    with pytest.raises(ConfigError, match=r"augment\.batched: .*timecrop_audio on 'audio'"):
        train_stage.run_augmenter(exp, AV)
    per_sample = train_stage.run_augmenter({**exp, "augment": {**exp["augment"], "batched": False}}, AV)
    assert per_sample.policy["audio"] == ("timecrop_audio", "noise_audio")  # fine in the workers
    with pytest.raises(ConfigError, match="true or false"):
        train_stage.run_augmenter({**exp, "augment": {"batched": "yes"}}, AV)
    with pytest.raises(ConfigError, match="batchd"):
        train_stage.run_augmenter({**exp, "augment": {"batchd": True}}, AV)
    # The default policy keeps temporal crops on variable-length audio/video: refused batched, by name.
    with pytest.raises(ConfigError, match="timecrop_video on 'video'"):
        train_stage.run_augmenter({**exp, "augment": {"batched": True}}, AV)


def test_train_loaders_augment_in_workers_or_on_the_device(toy_split, monkeypatch):
    monkeypatch.setattr(train_stage, "shards_dir", lambda corpus: toy_split.parent)
    settings = {"batch_size": 8, "num_workers": 0, "device": "cpu"}
    exp = {"corpus": "toy", "fields": FIELDS, "augment": {"strength": 0.5}}
    train, labeled, rows = train_stage.train_loaders(exp, settings, seed=1)
    assert labeled is train and rows is None and train.augment is not None
    exp["augment"]["batched"] = True
    train, labeled, rows = train_stage.train_loaders(exp, settings, seed=1)
    assert isinstance(train, DeviceAugmented) and labeled is train and train.loader.augment is None
    assert train.device == torch.device("cpu") and train.augmenter.strength == 0.5
    train, labeled, rows = train_stage.train_loaders({**exp, "label_fraction": 0.5}, settings, seed=1)
    assert isinstance(labeled, DeviceAugmented) and labeled is not train and len(rows) < 40
    assert sorted(labeled.loader.rows.tolist()) == sorted(rows.tolist())


def test_uint16_depth_is_resampled_as_the_per_sample_kernels_and_stays_uint16():
    """torch has no uint16 flip on CPU: geometric ops run widened and narrow back exactly."""
    features = {"depth": Field("uint16", (12, 10), "png")}
    values = make_rng(0, "depth").integers(0, 65535, (6, 12, 10), dtype=np.uint16)
    keys = [f"nyu/train/{i}" for i in range(6)]
    augmenter = Augmenter({"depth": ["rotate", "crop", "flip"]}, strength=1.0)
    samples = [augmenter({"__key__": k, "depth": v}, r) for k, v, r in zip(keys, values, loader_rngs(keys, seed=3))]
    expected = collate(samples, features, ["depth"])["depth"]
    got = augment_on(augmenter, {"__key__": keys, "depth": torch.from_numpy(values)}, loader_rngs(keys, seed=3),
                     torch.device("cpu"))["depth"]
    assert got.dtype == torch.uint16 and torch.equal(got.int(), expected.int())
    assert not torch.equal(got.int(), torch.from_numpy(values).int())
