"""methods/refnet.py (ReFNet / ReFNet_MS) and methods/retrieval.py (unimodal-query retrieval)."""
from __future__ import annotations

import inspect

import pytest
import torch

from methods import late_fusion, loop, refnet
from methods.fusions import FUSIONS
from methods.retrieval import hits_at, unimodal_retrieval
from mmdata.types import Field
from tests.test_methods import AVMNIST, MOSI, fake_batch

GENRES = ("drama", "comedy", "horror", "action")
MMIMDB = {
    "image": Field("float32", (28, 28), "npy"),
    "feat_text": Field("float32", (6, 5), "npy"),
    "label": Field("float32", (len(GENRES),), "npy", classes=GENRES, value_range=(0.0, 1.0)),
}
SMALL = {"dim": 8, "hidden": 16}


def _multilabel_batch(size, seed=0):
    batch = fake_batch(MMIMDB, size, seed)
    g = torch.Generator().manual_seed(seed + 100)
    batch["label"] = (torch.rand(size, len(GENRES), generator=g) < 0.4).float()  # fake_batch draws class ids
    return batch


def _model(features=AVMNIST, seed=0, **options):
    torch.manual_seed(seed)
    return refnet.build_model(features, fields=[n for n in features if n != "label"], **SMALL, **options)


class Batches:
    """A re-iterable list of batches that counts its passes."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


def test_decoders_are_registered_and_get_gradients():
    model = _model()
    assert isinstance(model.decoders, torch.nn.ModuleDict) and set(model.decoders) == {"image", "audio_spec"}
    names = dict(model.named_parameters())
    assert any(n.startswith("decoders.image.") for n in names) and any(k.startswith("decoders.audio_spec.")
                                                                      for k in model.state_dict())
    step = refnet.training_step(model, fake_batch(AVMNIST, 6))
    step["loss"].backward()
    for name, decoder in model.decoders.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters()), name
    assert float(step["refiner_loss"]) > 0 and step["pred"].shape == (6,)
    assert float(step["loss"]) == pytest.approx(float(step["task_loss"] + step["refiner_loss"] + step["ms_loss"]))


def test_fit_trains_the_decoders():
    model = _model(pretrain_epochs=1)
    before = {k: v.clone() for k, v in model.decoders.state_dict().items()}
    batches = [fake_batch(AVMNIST, 8, seed) for seed in range(2)]
    refnet.fit(model, batches, epochs=1, lr=1e-2, device="cpu", log=lambda line: None)
    assert all(not torch.equal(before[k], v) for k, v in model.decoders.state_dict().items() if "weight" in k)


def test_zero_weights_give_exactly_the_base_loss():
    model = _model(refiner_weight=0.0, ms_weight=0.0)
    batch = fake_batch(AVMNIST, 6)
    model.train()
    torch.manual_seed(1)
    ours = refnet.training_step(model, batch)
    torch.manual_seed(1)  # the same dropout draws: a zero-weight term is not computed at all
    base = late_fusion.training_step(model.base, batch)
    assert torch.equal(ours["loss"], base["loss"]) and torch.equal(ours["pred"], base["pred"])
    assert float(ours["refiner_loss"]) == 0.0 and float(ours["ms_loss"]) == 0.0


@pytest.mark.parametrize("loss", ["cosine", "mse", "contrastive"])
def test_refiner_weight_scales_every_loss_kind_per_field(loss):
    batch = fake_batch(AVMNIST, 8)
    terms = {}
    for weight in (0.1, 0.3, {"image": 0.3}):
        model = _model(refiner_weight=weight, refiner_loss=loss).eval()
        terms[str(weight)] = float(refnet.training_step(model, batch)["refiner_loss"])
    assert terms["0.3"] == pytest.approx(3 * terms["0.1"], rel=1e-5) and terms["0.3"] > 0
    model = _model(refiner_weight={"image": 0.3}, refiner_loss=loss).eval()
    parts = model.encode(batch)
    only_image = 0.3 * refnet.REFINER_LOSSES[loss](model.decoders["image"](model.fusion(parts)), parts["image"])
    assert terms[str({"image": 0.3})] == pytest.approx(float(only_image), rel=1e-5)
    model = _model(refiner_weight={"image": 0.3}, refiner_loss=loss)
    refnet.training_step(model, batch)["loss"].backward()
    assert all(p.grad is None for p in model.decoders["audio_spec"].parameters())  # gamma 0: not computed
    assert all(p.grad is not None for p in model.decoders["image"].parameters())


def test_targets_are_detached_by_default():
    batch = fake_batch(AVMNIST, 6)
    grads = {}
    for detach in (True, False):
        model = _model(detach_targets=detach)
        refnet.pretrain_step(model, batch)["loss"].backward()
        grads[detach] = torch.cat([p.grad.flatten() for p in model.base.encoders.parameters()])
    # the same weights (same seed); detached targets leave the encoders only the gradient through F_emb
    assert grads[True].abs().sum() > 0 and not torch.allclose(grads[True], grads[False])


def test_pretrain_step_reads_no_label():
    model = _model(refiner_loss="contrastive", refiner_options={"variant": "paper_eq4"})
    batch = fake_batch(AVMNIST, 6)
    del batch["label"]
    step = refnet.pretrain_step(model, batch)
    step["loss"].backward()
    assert set(step) == {"loss", "refiner_loss"} and float(step["loss"]) > 0
    assert model.base.head.weight.grad is None  # the head is not part of pretraining
    assert all(p.grad is not None for p in model.fusion.parameters())


def test_fit_runs_pretraining_on_unlabeled_batches_then_supervised():
    model = _model(pretrain_epochs=2)
    unlabeled = Batches([{k: v for k, v in fake_batch(AVMNIST, 8, s).items() if k != "label"} for s in range(3)])
    labeled = Batches([fake_batch(AVMNIST, 8, 10)])
    lines = []
    history = loop.fit(refnet, model, labeled, epochs=3, lr=1e-3, device="cpu", unlabeled_batches=unlabeled,
                       log=lines.append)
    assert unlabeled.passes == 2 and labeled.passes == 3
    assert history["pretrain"]["epoch"] == [0, 1] and history["epoch"] == [0, 1, 2]
    assert sum(line.startswith("pretrain epoch") for line in lines) == 2
    assert not model.training


def test_fit_without_pretraining_and_with_train_batches():
    batches = Batches([fake_batch(AVMNIST, 8, s) for s in range(2)])
    history = refnet.fit(_model(), batches, epochs=1, lr=1e-3, device="cpu", log=lambda line: None)
    assert history["pretrain"] is None and batches.passes == 1
    batches = Batches([fake_batch(AVMNIST, 8, s) for s in range(2)])
    history = refnet.fit(_model(pretrain_epochs=1), batches, epochs=1, lr=1e-3, device="cpu", log=lambda line: None)
    assert history["pretrain"]["epoch"] == [0] and batches.passes == 2


def test_fit_takes_the_loop_options():
    assert list(inspect.signature(refnet.fit).parameters) == list(inspect.signature(loop.fit).parameters)[1:]


def test_ms_loss_on_a_multilabel_corpus():
    model = _model(MMIMDB, ms_weight=0.2, refiner_weight=0.0).eval()  # eval: no dropout between the calls
    batch = _multilabel_batch(12)
    step = refnet.training_step(model, batch)
    assert float(step["ms_loss"]) > 0 and float(step["refiner_loss"]) == 0.0
    fused = model.embed(batch)
    expected = 0.2 * refnet.multi_similarity_loss(fused, batch["label"])
    assert float(step["ms_loss"]) == pytest.approx(float(expected), rel=1e-5)
    step["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fusion.parameters())


def test_build_errors_name_the_problem():
    with pytest.raises(ValueError, match="regression"):
        _model(MOSI, ms_weight=0.1)
    with pytest.raises(ValueError, match="refiner_loss"):
        _model(refiner_loss="l2")
    with pytest.raises(ValueError, match="margn"):
        _model(refiner_loss="contrastive", refiner_options={"margn": 0.2})
    with pytest.raises(ValueError, match="not input fields"):
        _model(refiner_weight={"text": 0.1})
    with pytest.raises(ValueError, match=">= 0"):
        _model(refiner_weight=-0.1)
    with pytest.raises(ValueError, match="pretraining needs"):
        _model(refiner_weight=0.0, pretrain_epochs=1)


def test_regression_corpus_without_ms():
    model = _model(MOSI)
    step = refnet.training_step(model, fake_batch(MOSI, 5))
    assert step["pred"].shape == (5,) and float(step["refiner_loss"]) > 0


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion(fusion):
    model = _model(fusion=fusion, ms_weight=0.1)
    step = refnet.training_step(model, fake_batch(AVMNIST, 6))
    step["loss"].backward()
    assert all(p.grad is not None for p in model.decoders.parameters())


def test_predict_and_embed_ignore_the_decoders():
    model = _model().eval()
    batch = fake_batch(AVMNIST, 5)
    scores, fused = refnet.predict(model, batch), refnet.embed(model, batch)
    assert torch.equal(scores, late_fusion.predict(model.base, batch))
    model.decoders = torch.nn.ModuleDict()  # the refiner dropped: inference unchanged
    assert torch.equal(refnet.predict(model, batch), scores) and torch.equal(refnet.embed(model, batch), fused)


class Stub(torch.nn.Module):
    """encode = the batch's fields a and b; fusion = concatenation: keys [a, b], queries [a, 0] and [0, b]."""

    fields, label_name, task = ("a", "b"), "label", "classification"

    def encode(self, batch):
        return {n: batch[n] for n in self.fields}

    def fusion(self, parts):
        return torch.cat([parts["a"], parts["b"]], dim=1)


def _stub_batch(label):
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 1.0], [3.0, 0.0]])
    return {"__key__": ["s0", "s1", "s2", "s3"], "a": a, "b": b, "label": label}


def test_retrieval_known_answer():
    # a-queries: samples 0, 1 both query [1, 0, 0, 0], whose nearest key is sample 0's (cos .71 > .32): a hit
    # for 0, a miss at top-1 for 1 (label 0 != 1); samples 2, 3 likewise. b-queries: 0 -> sample 3 (same
    # label 0, cos .95), 1 -> itself, 2 -> sample 1 (label 1), 3 -> itself: all hits at top-1.
    classes = torch.tensor([0, 1, 1, 0])
    expected = {"retrieval_a_top1": 0.5, "retrieval_a_top2": 1.0, "retrieval_b_top1": 1.0, "retrieval_b_top2": 1.0}
    assert unimodal_retrieval(Stub(), [_stub_batch(classes)], ks=(1, 2)) == expected
    # multi-hot targets: a hit needs the whole vector; sample 1 ([1, 1]) meets sample 0 ([1, 0]) first: a miss
    multi_hot = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    halves = [{k: v[i:i + 2] for k, v in _stub_batch(multi_hot).items()}
              for i in (0, 2)]  # two batches: the bank spans them
    assert unimodal_retrieval(Stub(), halves, ks=(1, 2)) == expected
    result = unimodal_retrieval(Stub(), [_stub_batch(classes)], ks=(1, 10))
    assert all(type(v) is float for v in result.values()) and result["retrieval_a_top10"] == 1.0  # k > N -> N


def test_hits_at_ranks_against_the_whole_bank():
    keys = torch.eye(3)
    queries = torch.tensor([[0.0, 1.0, 0.1], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([2, 1, 2])  # query 0 is nearest key 1 then key 2; query 2 nearest key 0 (label 2)
    assert hits_at(queries, keys, targets, (1, 2, 3)) == {1: pytest.approx(2 / 3), 2: 1.0, 3: 1.0}


def test_retrieval_on_a_refnet_model():
    model = _model(MMIMDB)
    batches = [_multilabel_batch(6, s) for s in range(2)]
    model.train()
    result = unimodal_retrieval(model, batches, ks=(1, 5, 12))
    assert set(result) == {f"retrieval_{f}_top{k}" for f in ("image", "feat_text") for k in (1, 5, 12)}
    assert all(0.0 <= v <= 1.0 for v in result.values()) and result["retrieval_image_top12"] == 1.0
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="regression"):
        unimodal_retrieval(_model(MOSI), [fake_batch(MOSI, 4)])
    with pytest.raises(ValueError, match="positive"):
        unimodal_retrieval(model, batches, ks=(0,))


def test_fit_under_bf16_autocast_keeps_the_losses_in_float32():
    model = _model(ms_weight=0.1, refiner_loss="contrastive", pretrain_epochs=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = refnet.training_step(model, fake_batch(AVMNIST, 8))
    assert all(step[k].dtype == torch.float32 for k in ("loss", "task_loss", "refiner_loss", "ms_loss"))
    history = refnet.fit(model, [fake_batch(AVMNIST, 8)], epochs=1, lr=1e-3, device="cpu", amp="bf16",
                         log=lambda line: None)
    assert history["amp"] == "bfloat16" and history["pretrain"]["amp"] == "bfloat16"
