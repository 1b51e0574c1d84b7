"""Progressive Fusion (methods.md 2.1, 2.5): zero context is the base model (P2), the parameter overhead formula
(P3), the recurrence and its gradients, the input join on every tensor kind, errors, and the loss options."""
from __future__ import annotations

import pytest
import torch

from methods import late_fusion, loop, profusion
from methods.fusions import FUSIONS
from mmdata.types import Field
from tests.test_methods import fake_batch

REG = Field("float32", (), "json", value_range=(-3.0, 3.0))
SERIES = {  # a variable-length sequence, a fixed one, a vector and a text field; regression target
    "feat_audio": Field("float32", (None, 5), "npy"),
    "feat_vision": Field("float32", (6, 4), "npy"),
    "feat_pooled": Field("float32", (7,), "npy"),
    "text": Field("str", (), "txt"),
    "label": REG,
}
PICTURES = {  # a channel-less float picture, a uint8 spectrogram, an RGB image; 3 classes
    "image": Field("float32", (8, 8), "npy"),
    "audio_spec": Field("uint8", (12, 12), "png"),
    "image_rgb": Field("uint8", (8, 8, 3), "jpg"),
    "label": Field("int64", (), "cls", classes=("a", "b", "c")),
}
TENSORS = ["feat_audio", "feat_vision", "feat_pooled"]
SMALL = {"dim": 6, "hidden": 8, "dropout": 0.0}


def _model(features=SERIES, fields=TENSORS, seed=0, **options):
    torch.manual_seed(seed)
    return profusion.build_model(features, fields=fields, **{**SMALL, **options})


def _perturb_back(model, seed=1):
    """Non-zero, non-tiny W_j so that the context visibly matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in model.back.values():
            w.weight.copy_(torch.randn(w.weight.shape, generator=g))


@pytest.mark.parametrize("fusion", ["concat", "lmf"])
@pytest.mark.parametrize("join", ["concat", "add"])
@pytest.mark.parametrize("join_layer", ["input", "embedding"])
def test_zero_context_is_the_base_model(fusion, join, join_layer):
    """P2: R = 1, or W = 0 for R = 3, gives the output of a plain LateFusion on the original schema holding the
    same weights; the differences are pure rounding (0 in float64, < 1e-7 in float32)."""
    if fusion not in FUSIONS:
        pytest.skip(f"fusion {fusion!r} is not registered yet")
    batch = fake_batch(SERIES, 5)
    one = _model(fusion=fusion, join=join, join_layer=join_layer, steps=1)
    _perturb_back(one)  # irrelevant at R = 1: c_0 = 0 and W has no bias
    assert profusion.zero_context_difference(one, batch, zero_back=False) < 1e-12
    assert profusion.zero_context_difference(one, batch, zero_back=False, dtype=torch.float32) < 1e-7
    three = _model(fusion=fusion, join=join, join_layer=join_layer, steps=3)
    assert profusion.zero_context_difference(three, batch) < 1e-12
    assert profusion.zero_context_difference(three, batch, dtype=torch.float32) < 1e-7
    base = profusion.base_model(one.eval()).eval()
    assert type(base) is late_fusion.LateFusion and base.features == one.features
    assert (base(batch) - one(batch)).abs().max() < 1e-7  # LateFusion.forward itself, in float32


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_zero_context_for_every_fusion_at_the_embedding(fusion):
    """The base fusion is rebuilt on [z_j ; W_j c]; its weights map back onto every fusion's own layout."""
    batch = fake_batch(SERIES, 5)
    model = _model(fusion=fusion, join_layer="embedding", steps=2, context_dim=3)
    assert profusion.zero_context_difference(model, batch) < 1e-12


def test_context_changes_the_output_once_w_is_not_zero():
    """Negative control for P2: with W != 0, R = 2 differs from R = 1 and from the base model."""
    batch = fake_batch(SERIES, 5)
    model = _model(steps=2).eval()
    _perturb_back(model)
    two = model(batch)
    model.steps = 1
    assert (two - model(batch)).abs().max() > 1e-3
    model.steps = 2
    assert profusion.zero_context_difference(model, batch, zero_back=False) > 1e-3


def test_overhead_is_the_formula_for_the_input_concat_join():
    """P3: overhead = sum_j d_j (|c| + h_j1) exactly; h_j1 = dim for the linear first layer of vectors and
    sequences, width 16 x 3 x 3 for the first conv of pictures."""
    for options, d in (({}, {"feat_audio": 5, "feat_vision": 4, "feat_pooled": 7}),
                       ({"context_dim": 3}, dict.fromkeys(TENSORS, 3))):
        counts = profusion.parameter_overhead(_model(**options))
        assert counts["overhead"] == sum(dj * (SMALL["hidden"] + SMALL["dim"]) for dj in d.values())
        assert counts["base"] == sum(p.numel() for p in late_fusion.build_model(SERIES, fields=TENSORS, **SMALL)
                                     .parameters())
        assert counts["profusion"] == counts["base"] + counts["overhead"]
        assert counts["fraction"] == pytest.approx(counts["overhead"] / counts["base"])
    pictures = profusion.parameter_overhead(_model(PICTURES, ["image", "audio_spec", "image_rgb"], context_dim=2))
    assert pictures["overhead"] == 3 * 2 * (SMALL["hidden"] + 16 * 3 * 3)
    add = profusion.parameter_overhead(_model(join="add"))  # W_j only: no extra columns
    assert add["overhead"] == (5 + 4 + 7) * SMALL["hidden"]


def test_overhead_and_base_model_leave_the_global_rng_alone():
    model = _model()
    state = torch.get_rng_state()
    profusion.parameter_overhead(model)
    profusion.base_model(model)
    assert torch.equal(torch.get_rng_state(), state)


def test_gradients_reach_w_and_flow_through_every_step():
    model = _model(steps=2).train()
    contexts = model.contexts(fake_batch(SERIES, 6))
    contexts[0].retain_grad()
    y = fake_batch(SERIES, 6)["label"]
    loss = torch.nn.functional.l1_loss(model.base.output(contexts[-1]), y)
    loss.backward()
    assert contexts[0].grad is not None and contexts[0].grad.abs().sum() > 0  # c_1 is not detached
    for name, w in model.back.items():
        assert w.bias is None and w.weight.grad is not None and w.weight.grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in model.base.encoders.parameters())  # shared weights, used at each step


def test_input_join_on_sequences_ignores_padding():
    model = _model(fields=["feat_audio", "feat_vision"], steps=2).eval()
    _perturb_back(model)
    batch = fake_batch(SERIES, 4, lengths=[3, 6, 1, 5])
    out = model(batch)
    noisy = dict(batch)
    noisy["feat_audio"] = torch.where(batch["feat_audio_mask"][..., None], batch["feat_audio"], 100.0)
    assert torch.allclose(model(noisy), out, atol=1e-6)


@pytest.mark.parametrize("join", ["concat", "add"])
def test_input_join_on_pictures_and_video(join):
    """[H, W] and [H, W, C] pictures (uint8 scaled) and [T, H, W, C] video take the context as channels."""
    video = {"video": Field("uint8", (2, 8, 8, 3), "npy"), "label": PICTURES["label"]}
    for features in (PICTURES, video):
        fields = [n for n in features if n != "label"]
        model = _model(features, fields, join=join, steps=2).eval()
        _perturb_back(model)
        batch = fake_batch(features, 3)
        assert model(batch).shape == (3, 3) and profusion.embed(model, batch).shape == (3, SMALL["hidden"])
        assert profusion.zero_context_difference(model, batch) < 1e-12
        if join == "concat":
            widths = {n: model.base.features[n].shape[-1] for n in fields}
            assert widths == {n: (1 if len(f.shape) == 2 else f.shape[-1]) * 2 for n, f in features.items()
                              if n != "label"}


def test_text_needs_the_embedding_join():
    with pytest.raises(ValueError, match="join_layer='embedding'"):
        _model(fields=["feat_pooled", "text"])
    batch = fake_batch(SERIES, 4)
    for join_layer in ("embedding", {"text": "embedding"}):
        model = _model(fields=["feat_pooled", "text"], join_layer=join_layer)
        assert model.join_layers["text"] == "embedding" and model(batch).shape == (4,)
        assert profusion.zero_context_difference(model, batch) < 1e-12


def test_per_step_loss_averages_the_step_losses():
    batch = fake_batch(SERIES, 6)
    model = _model(steps=3, per_step_loss=True).eval()
    _perturb_back(model)
    step = profusion.training_step(model, batch)
    losses = [torch.nn.functional.l1_loss(out, batch["label"]) for out in model.outputs(batch)]
    assert step["loss"].item() == pytest.approx(torch.stack(losses).mean().item(), abs=1e-6)
    assert step["final_loss"].item() == pytest.approx(losses[-1].item(), abs=1e-6)
    assert abs(losses[0].item() - losses[-1].item()) > 1e-4  # so the two options really differ
    model.per_step_loss = False
    final = profusion.training_step(model, batch)
    assert final["loss"].item() == pytest.approx(losses[-1].item(), abs=1e-6) and "final_loss" not in final
    assert torch.equal(final["pred"], model(batch).detach())


@pytest.mark.parametrize("options, match", [
    ({"steps": 0}, "steps"), ({"steps": 1.5}, "steps"), ({"join": "mul"}, "concat, add"),
    ({"join_layer": "middle"}, "input"), ({"join_layer": {"feat_x": "input"}}, "feat_x"),
    ({"context_dim": 0}, "context_dim"), ({"join": "add", "context_dim": 3}, "join='concat'"),
    ({"fusion": "nope"}, "unknown fusion"),
])
def test_bad_options_name_the_choices(options, match):
    with pytest.raises(ValueError, match=match):
        _model(**options)


def test_trains_with_the_loop_and_under_autocast():
    batches = [fake_batch(SERIES, 8, seed=s) for s in range(2)]
    model = _model(steps=2)
    history = loop.fit(profusion, model, batches, epochs=2, lr=1e-2, device="cpu", valid_batches=batches[:1],
                       log=lambda line: None)
    assert len(history["train_loss"]) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"])))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = profusion.training_step(model.train(), batches[0])
    assert step["loss"].dtype == torch.float32 and step["pred"].shape == (8,)
    assert profusion.predict(model.eval(), batches[0]).shape == (8,)
