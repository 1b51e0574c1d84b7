"""Fusion modules: TFN layout, LMF == TFN + the linear map of its factors, registration, shapes and gradients
for 1-3 fields, option checks, the GMU gate variants and the decision-level identity; early_fusion joins."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from methods import early_fusion, late_fusion
from methods.fusions import FUSIONS, GatedFusion, LowRankFusion, TensorFusion, build_fusion
from mmdata.types import Field

DIMS = {"a": 3, "b": 2, "c": 4}
HIDDEN = 5


def _dims(m: int) -> dict[str, int]:
    return dict(list(DIMS.items())[:m])


def _parts(dims: dict[str, int], *lead: int, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(*lead, d, generator=g, dtype=torch.float64).to(dtype) for n, d in dims.items()}


def test_tfn_layout_hand_checked():
    tfn = TensorFusion({"a": 1, "b": 2}, HIDDEN)
    t = tfn.tensor({"a": torch.tensor([[2.0]]), "b": torch.tensor([[3.0, 5.0]])})
    assert t.tolist() == [[1, 3, 5, 2, 6, 10]]  # [1; 2] ⊗ [1; 3; 5]: the 1 first, field a outermost
    tfn = TensorFusion({"x": 1, "y": 1, "z": 1}, HIDDEN)
    parts = {"z": torch.tensor([[5.0]]), "y": torch.tensor([[3.0]]), "x": torch.tensor([[2.0]])}  # dict order ignored
    assert tfn.tensor(parts).tolist() == [[1, 5, 3, 15, 2, 10, 6, 30]]
    assert tfn.linear.in_features == 8


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("rank", [1, 4])
def test_lmf_equals_tfn_with_the_linear_map_of_its_factors(m, rank):
    torch.manual_seed(m * 10 + rank)
    lmf = LowRankFusion(_dims(m), HIDDEN, rank=rank)
    with torch.no_grad():  # a non-zero bias, so that it is compared too
        lmf.bias.normal_()
    tfn = TensorFusion(_dims(m), HIDDEN)
    weight = lmf.full_weight()
    assert weight.shape == tfn.linear.weight.shape
    with torch.no_grad():
        tfn.linear.weight.copy_(weight)
        tfn.linear.bias.copy_(lmf.bias[0])
    for lead in [(4,), (2, 3)]:
        parts = _parts(_dims(m), *lead, seed=rank)
        assert torch.allclose(lmf.linear(parts), tfn.linear(tfn.tensor(parts)), atol=1e-5)
        assert torch.allclose(lmf(parts), tfn(parts), atol=1e-5)


def test_lmf_initialisation_follows_the_lmf_code():
    torch.manual_seed(0)
    lmf = LowRankFusion({"a": 63}, 64, rank=4)
    factor = lmf.factors[0]
    assert factor.shape == (4, 64, 64) and torch.equal(lmf.bias, torch.zeros(1, 64))
    expected = math.sqrt(2.0 / (64 * 64 + 4 * 64))  # xavier-normal fans of a [rank, d + 1, hidden] tensor
    assert abs(float(factor.std()) / expected - 1) < 0.05


def _expected_parameters(name: str, dims: dict[str, int], h: int) -> int:
    """Parameter counts from each fusion's formula (a weight kept outside parameters() would be missing)."""
    total, m = sum(dims.values()), len(dims)
    tensor = math.prod(d + 1 for d in dims.values())
    return {
        "concat": total * h + h,
        "sum": total * h + h,
        "gmu": 2 * total + total * h + (m * h * h * (m - 1)),  # BN affine, projections, gate on projected
        "tfn": tensor * h + h,
        "lmf": 4 * sum(d + 1 for d in dims.values()) * h + 4 + h,
        "late_decision": total * h + m * h,
    }[name]


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_parameter_is_registered(name):
    fusion = build_fusion(name, DIMS, HIDDEN)
    assert sum(p.numel() for p in fusion.parameters()) == _expected_parameters(name, DIMS, HIDDEN)
    fusion = fusion.to(torch.float64)
    floats = [v for v in fusion.state_dict().values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float64 for v in floats)
    out = fusion(_parts(DIMS, 4, dtype=torch.float64))  # a stray float32 tensor would fail the matmul
    assert out.dtype == torch.float64


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_shapes_and_gradients_for_one_to_three_fields(name, m):
    torch.manual_seed(m)
    fusion = build_fusion(name, _dims(m), HIDDEN).train()
    parts = {n: x.requires_grad_() for n, x in _parts(_dims(m), 6).items()}
    out = fusion(parts)
    assert out.shape == (6, HIDDEN)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    for n, x in parts.items():
        assert x.grad is not None and bool(x.grad.abs().sum() > 0), f"{name}: no gradient reaches field {n}"
    for p_name, p in fusion.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), f"{name}: no gradient reaches {p_name}"
    reordered = dict(reversed(list(parts.items())))
    assert torch.allclose(fusion.eval()(reordered), fusion(parts))  # order fixed by dims, not by the dict
    assert fusion.train()(_parts(_dims(m), 1)).shape == (1, HIDDEN)  # a last batch of one sample still trains
    assert fusion(_parts(_dims(m), 2, 7)).shape == (2, 7, HIDDEN)  # leading axes (per-seed features)


def test_build_fusion_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown fusion 'nope'.*concat"):
        build_fusion("nope", DIMS, HIDDEN)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rank'\] for fusion 'gmu'.*gate_input"):
        build_fusion("gmu", DIMS, HIDDEN, rank=2)
    with pytest.raises(ValueError, match="known: none"):
        build_fusion("concat", DIMS, HIDDEN, rank=2)
    with pytest.raises(ValueError, match="gate_input.*projected, raw"):
        build_fusion("gmu", DIMS, HIDDEN, gate_input="pre")
    for rank in (0, 2.5, True):
        with pytest.raises(ValueError, match="rank"):
            build_fusion("lmf", DIMS, HIDDEN, rank=rank)
    assert len(build_fusion("lmf", DIMS, HIDDEN, rank=3).weights[0]) == 3


def test_gmu_two_fields_is_the_bimodal_code_form():
    torch.manual_seed(0)
    gmu = GatedFusion(_dims(2), HIDDEN).eval()
    with torch.no_grad():  # non-trivial running statistics, so that BN is not the identity
        for norm in gmu.norms.values():
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    parts = _parts(_dims(2), 4)
    p = [gmu.proj[n](gmu.norms[n](parts[n])) for n in ("a", "b")]
    z = torch.sigmoid(torch.cat(p, dim=-1) @ gmu.gate.weight.T)  # gate on the projected, pre-tanh features
    assert torch.allclose(gmu(parts), z * torch.tanh(p[0]) + (1 - z) * torch.tanh(p[1]), atol=1e-6)


def test_gmu_gate_inputs_differ():
    torch.manual_seed(0)
    projected, raw = GatedFusion(DIMS, HIDDEN), GatedFusion(DIMS, HIDDEN, gate_input="raw")
    assert projected.gate.in_features == 3 * HIDDEN and raw.gate.in_features == sum(DIMS.values())
    parts = _parts(DIMS, 8)
    scaled = {**parts, "a": parts["a"] * 10}
    # In training mode BN removes the scale, so only a gate that reads the raw inputs sees it.
    assert torch.allclose(projected(scaled), projected(parts), atol=1e-4)
    assert not torch.allclose(raw(scaled), raw(parts), atol=1e-2)


def test_gmu_three_fields_mixes_the_candidates_convexly():
    torch.manual_seed(0)
    gmu = GatedFusion(DIMS, HIDDEN).eval()
    parts = _parts(DIMS, 16)
    candidates = torch.stack([torch.tanh(gmu.proj[n](gmu.norms[n](parts[n]))) for n in DIMS])
    out = gmu(parts)
    assert bool((out >= candidates.amin(dim=0) - 1e-6).all() and (out <= candidates.amax(dim=0) + 1e-6).all())


def test_late_decision_averages_the_fields_logits():
    torch.manual_seed(0)
    fusion = build_fusion("late_decision", DIMS, HIDDEN).eval()
    head = nn.Linear(HIDDEN, 7)
    parts = _parts(DIMS, 4)
    per_field = torch.stack([head(v) for v in fusion.per_field(parts).values()])
    assert torch.allclose(head(fusion(parts)), per_field.mean(dim=0), atol=1e-6)
    # The same identity through a method's own head.
    features = {"feat_a": Field("float32", (3,), "npy"), "feat_b": Field("float32", (6,), "npy"),
                "label": Field("int64", (), "cls", classes=("x", "y"))}
    model = late_fusion.build_model(features, fields=["feat_a", "feat_b"], dim=4, hidden=6,
                                    fusion="late_decision").eval()
    batch = {"feat_a": torch.randn(3, 3), "feat_b": torch.randn(3, 6)}
    encoded = model.encode(batch)
    decisions = torch.stack([model.output(v) for v in model.fusion.per_field(encoded).values()])
    assert torch.allclose(model(batch), decisions.mean(dim=0), atol=1e-6)


# --- early_fusion: the inputs joined before one encoder ---

EARLY = {
    "image": Field("uint8", (6, 6), "png"), "depth": Field("float32", (6, 6, 2), "npy"),
    "image_small": Field("uint8", (4, 4), "png"),
    "feat_a": Field("float32", (None, 3), "npy"), "feat_b": Field("float32", (None, 2), "npy"),
    "feat_fixed": Field("float32", (5, 2), "npy"), "feat_v": Field("float32", (4,), "npy"),
    "feat_w": Field("float32", (2,), "npy"), "text": Field("str", (), "txt"),
    "label": Field("int64", (), "cls", classes=("x", "y")),
}


def _sequences(lengths_a, lengths_b):
    g = torch.Generator().manual_seed(0)
    batch = {"__key__": [f"toy/train/s{i}" for i in range(len(lengths_a))], "label": torch.tensor([0, 1, 0])}
    for name, dim, lengths in (("feat_a", 3, lengths_a), ("feat_b", 2, lengths_b)):
        lengths = torch.tensor(lengths)
        mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
        batch[name] = torch.randn(len(lengths), mask.shape[1], dim, generator=g) * mask[..., None]
        batch[f"{name}_lengths"], batch[f"{name}_mask"] = lengths, mask
    return batch


def test_early_fusion_joins_vectors_pictures_and_sequences():
    model = early_fusion.build_model(EARLY, fields=["feat_v", "feat_w"], dim=4, hidden=6)
    batch = {"feat_v": torch.randn(3, 4), "feat_w": torch.randn(3, 2), "label": torch.tensor([0, 1, 1])}
    x, mask = model.join(batch)
    assert torch.equal(x, torch.cat([batch["feat_v"], batch["feat_w"]], dim=1)) and mask is None
    model = early_fusion.build_model(EARLY, fields=["image", "depth"], dim=4, hidden=6)
    pixels = torch.randint(0, 256, (3, 6, 6), dtype=torch.uint8)
    x, _ = model.join({"image": pixels, "depth": torch.ones(3, 6, 6, 2)})
    assert x.shape == (3, 6, 6, 3) and torch.equal(x[..., 0], pixels.float() / 255) and bool((x[..., 1:] == 1).all())
    model = early_fusion.build_model(EARLY, fields=["feat_a", "feat_b"], dim=4, hidden=6)
    batch = _sequences([2, 4, 1], [2, 4, 1])
    x, mask = model.join(batch)
    assert x.shape == (3, 4, 5) and torch.equal(mask, batch["feat_a_mask"])
    assert early_fusion.training_step(model, batch)["loss"].dim() == 0
    assert early_fusion.embed(model, batch).shape == (3, 6) and early_fusion.predict(model, batch).shape == (3, 2)


def test_early_fusion_names_the_sample_whose_lengths_differ():
    model = early_fusion.build_model(EARLY, fields=["feat_a", "feat_b"], dim=4, hidden=6)
    with pytest.raises(ValueError, match=r"'toy/train/s1' has lengths feat_a: 4, feat_b: 3.*late_fusion"):
        model(_sequences([2, 4, 1], [2, 3, 1]))


@pytest.mark.parametrize("fields, why", [
    (["image", "text"], r"\['text'\] hold strings"),
    (["image", "image_small"], "same height and width"),
    (["feat_a", "feat_fixed"], "one length T"),
    (["feat_v", "feat_a"], "of one kind"),
])
def test_early_fusion_refuses_fields_that_do_not_join(fields, why):
    with pytest.raises(ValueError, match=why) as err:
        early_fusion.build_model(EARLY, fields=fields)
    message = str(err.value)
    assert all(f"{n} {EARLY[n].dtype} {list(EARLY[n].shape)}" in message for n in fields) and "late_fusion" in message


def test_early_fusion_refuses_a_label_it_cannot_predict_and_keeps_unimodal_runs():
    class_map = {**EARLY, "label": Field("uint8", (6, 6), "png", classes=("void", "wall"))}
    with pytest.raises(ValueError, match=r"label 'label' \(uint8, shape \[6, 6\]"):
        early_fusion.build_model(class_map, fields=["image", "depth"])
    model = early_fusion.build_model(EARLY, fields=["text"], dim=4, hidden=6)  # one field: its own encoder
    assert model({"text": ["a b", "c", "d e f"]}).shape == (3, 2)
