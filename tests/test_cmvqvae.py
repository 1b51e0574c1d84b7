"""methods/quantize.py (VectorQuantizer, methods.md 7.3 / 4.4 V1), methods/cmvqvae.py (mask mechanics V2, the
method contract, describe / figures) and methods/complementarity.py (V4 bookkeeping)."""
from __future__ import annotations

import math

import pytest
import torch

from methods import cmvqvae, loop
from methods.complementarity import complementarity_of, flat
from methods.quantize import VectorQuantizer, perplexity
from mmdata.types import Field
from tests.test_methods import fake_batch

#: CREMA-D-like: a float spectrogram and a variable-length uint8 clip of square RGB frames.
CREMA = {"audio_spec": Field("float32", (20, 12), "npy"), "video": Field("uint8", (None, 16, 16, 3), "npy"),
         "label": Field("int64", (), "cls", classes=("a", "b", "c"))}
TINY = {"num_codes": 8, "code_dim": 4, "hidden": 8, "residual_hidden": 4, "residual_layers": 1, "image_size": 8,
        "solver_hidden": 8, "decay": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _vq(codebook, beta=0.25, decay=0.0):
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], commitment=beta, decay=decay)
    with torch.no_grad():
        vq.codebook.copy_(codebook)
    return vq


def _crema_batch(size=5, seed=0):
    """A batch in the mmdata.load layout: clips padded to the longest (lengths 3, 1, 2, 3, 2) with a mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 1, 2, 3, 2][:size])
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    video = torch.randint(0, 256, (size, mask.shape[1], 16, 16, 3), generator=g, dtype=torch.uint8)
    return {"__key__": [f"fake/train/{seed}-{i}" for i in range(size)],
            "audio_spec": torch.randn(size, 20, 12, generator=g), "video": video * mask[:, :, None, None, None],
            "video_lengths": lengths, "video_mask": mask, "label": torch.randint(3, (size,), generator=g)}


def _model(features=CREMA, fields=("audio_spec", "video"), seed=0, **options):
    torch.manual_seed(seed)
    return cmvqvae.build_model(features, fields=list(fields), **{**TINY, **options})


# --- V1: the quantiser against methods.md 7.3 -------------------------------------------------------------

def test_codes_loss_and_straight_through_match_the_formulas():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    vq = _vq(codebook)
    x = torch.tensor([[[0.2, 0.1], [0.9, 1.3]], [[-0.8, 1.5], [3.0, 3.0]]], requires_grad=True)  # [2, 2, D]
    q, loss, codes = vq(x)
    assert codes.tolist() == [[0, 1], [2, 1]] and codes.dtype == torch.int64
    assert torch.equal(q, codebook[codes])  # the forward value is exactly the codes
    expected = (1 + 0.25) * ((codebook[codes] - x.detach()) ** 2).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(0))
    (q * upstream).sum().backward(retain_graph=True)
    assert torch.equal(x.grad, upstream)  # straight-through: the identity
    x.grad = None
    loss.backward()
    # d/dx of beta * mean((sg q - x)^2) only; the codebook gets d/de of mean((e - sg x)^2).
    assert torch.allclose(x.grad, 0.25 * 2 * (x.detach() - codebook[codes]) / x.numel())
    diff = 2 * (codebook[codes] - x.detach()).reshape(-1, 2)
    grad_e = torch.zeros_like(codebook).index_add_(0, codes.reshape(-1), diff)
    assert torch.allclose(vq.codebook.grad, grad_e / x.numel())


def test_ties_go_to_the_first_code_and_shapes_are_checked():
    vq = _vq(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]]))
    assert vq(torch.tensor([[0.0, 0.5], [2.0, 0.0]]))[2].tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        vq(torch.zeros(3, 5))


def test_initialisation_follows_zalando():
    torch.manual_seed(0)
    plain = VectorQuantizer(64, 8)
    assert isinstance(plain.codebook, torch.nn.Parameter) and float(plain.codebook.abs().max()) <= 1 / 64
    assert float(plain.codebook.abs().max()) > 0.9 / 64  # U(-1/K, 1/K), not a narrower draw
    torch.manual_seed(0)
    ema = VectorQuantizer(64, 8, decay=0.99)
    assert not list(ema.parameters()) and set(dict(ema.named_buffers())) == {"codebook", "cluster_size", "code_sum"}
    assert torch.equal(ema.cluster_size, torch.zeros(64)) and 0.8 < float(ema.codebook.std()) < 1.2
    assert not torch.equal(ema.codebook, ema.code_sum)  # two independent N(0, 1) draws
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(4, 2, decay=1.0)


def _ema_reference(n, m, x, codes, k, gamma, eps):
    """methods.md 7.3 steps 1-4 written out per code, in float64."""
    counts = [sum(1 for c in codes if c == j) for j in range(k)]
    n = [gamma * n[j] + (1 - gamma) * counts[j] for j in range(k)]
    total = sum(n)
    n = [(n[j] + eps) / (total + k * eps) * total for j in range(k)]
    m = [[gamma * m[j][d] + (1 - gamma) * sum(x[i][d] for i in range(len(x)) if codes[i] == j)
          for d in range(len(m[0]))] for j in range(k)]
    return n, m, [[m[j][d] / n[j] for d in range(len(m[0]))] for j in range(k)]


def test_ema_updates_after_quantising_with_the_old_codebook():
    gamma, eps = 0.9, 1e-5
    vq = _vq(torch.tensor([[0.0, 0.0], [2.0, 2.0], [5.0, -5.0]]), beta=0.5, decay=gamma)
    with torch.no_grad():
        vq.code_sum.copy_(torch.tensor([[0.5, -0.5], [1.0, 2.0], [-3.0, 0.25]]))
    n, m = [0.0] * 3, vq.code_sum.double().tolist()
    vq.train()
    for x in (torch.tensor([[0.1, -0.2], [1.8, 2.1], [2.2, 1.7], [0.3, 0.3]]),
              torch.tensor([[1.0, 1.0], [0.9, 1.2], [4.0, -4.0], [-0.1, 0.0]])):
        old = vq.codebook.clone()
        q, loss, codes = vq(x)
        assert torch.equal(q, old[codes])  # quantised with the codebook before this batch's update
        assert float(loss) == pytest.approx(0.5 * float(((old[codes] - x) ** 2).mean()), rel=1e-6)
        n, m, e = _ema_reference(n, m, x.double().tolist(), codes.tolist(), 3, gamma, eps)
        assert torch.allclose(vq.cluster_size.double(), torch.tensor(n, dtype=torch.float64), rtol=1e-5)
        assert torch.allclose(vq.code_sum.double(), torch.tensor(m, dtype=torch.float64), rtol=1e-5)
        assert torch.allclose(vq.codebook.double(), torch.tensor(e, dtype=torch.float64), rtol=1e-4)
    vq.eval()
    frozen = vq.codebook.clone()
    vq(torch.randn(6, 2))
    assert torch.equal(vq.codebook, frozen)  # no update outside training mode


def test_perplexity_is_the_exponentiated_code_entropy():
    vq = _vq(torch.eye(4))
    vq(torch.eye(4)[[0, 1, 0, 1]])
    assert float(vq.perplexity) == pytest.approx(2.0, rel=1e-6)
    vq(torch.eye(4)[[2, 2, 2]])
    assert float(vq.perplexity) == pytest.approx(1.0, rel=1e-6)
    uniform = torch.nn.functional.one_hot(torch.arange(8), 8).float()
    assert float(perplexity(uniform)) == pytest.approx(8.0, rel=1e-6)


# --- V2: mask mechanics -------------------------------------------------------------------------------------

def test_mask_is_binary_forward_and_identity_backward():
    model = _model()
    with torch.no_grad():
        model.omega[::2] = 0.001  # below t = 5e-3: off
    mask = model.mask()
    assert torch.equal(mask, (model.omega > 5e-3).float()) and mask.sum() == model.omega.numel() // 2
    upstream = torch.arange(float(mask.numel()))
    (mask * upstream).sum().backward()
    assert torch.equal(model.omega.grad, upstream)


def test_penalty_alone_lowers_every_channel_by_lr_times_weight_and_switches_them_off_on_time():
    model, lr = _model(), 3.0
    opt = torch.optim.SGD([model.omega], lr=lr)
    switch = math.ceil((0.01 - 5e-3) / (lr * 1e-4))  # 17: not on a float boundary
    for step in range(1, switch + 1):
        before = model.omega.detach().clone()
        opt.zero_grad()
        (model.mask_penalty * model.omega.sum()).backward()
        opt.step()
        assert torch.allclose(before - model.omega.detach(), torch.full_like(before, lr * 1e-4), atol=1e-8)
        assert bool(model.hard_mask().all()) == (step < switch), step


def test_task_gradient_reaches_switched_off_channels():
    model = _model()
    with torch.no_grad():
        model.omega.fill_(-1.0)  # every channel contradictory: the solver sees zeros
    batch = _crema_batch()
    logits = model(batch)[0]
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    assert model.omega.grad is not None and bool(model.omega.grad.abs().sum() > 0)


# --- V4: bookkeeping ----------------------------------------------------------------------------------------

def test_digits_channel_counts_reproduce_table_1():
    mask = torch.zeros(64, dtype=torch.bool)
    mask[:15] = True  # MNIST: 15 of its 32 channels complementary
    mask[32] = True  # SVHN: 1
    out = complementarity_of(mask, ["image_mnist", "image_svhn"])
    assert out["compl"] == {"image_mnist": 23.4375, "image_svhn": 1.5625}
    assert out["contr"] == {"image_mnist": 26.5625, "image_svhn": 48.4375}
    assert out["zeta"] == pytest.approx(1 / 15) and round(out["zeta"], 4) == 0.0667
    assert sum(out["compl"].values()) + sum(out["contr"].values()) == 100.0


def test_zeta_for_more_modalities_and_for_an_empty_mask():
    mask = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=torch.bool)  # 2, 1, 3 channels on
    out = complementarity_of(mask, ["a", "b", "c"])
    assert out["zeta"] == pytest.approx(1 / 3)
    assert out["zeta_per_field"] == pytest.approx({"a": 2 / 4, "b": 1 / 5, "c": 3 / 3})
    assert sum(out["compl"].values()) + sum(out["contr"].values()) == pytest.approx(100.0)
    with pytest.warns(UserWarning, match="zeta set to 0"):
        assert complementarity_of(torch.zeros(8, dtype=torch.bool), ["a", "b"])["zeta"] == 0.0
    assert flat(out)["zeta_c"] == 1.0 and flat(out)["contr_a"] == pytest.approx(100 / 9)


# --- the method contract on a CREMA-D-like schema -----------------------------------------------------------

def test_training_step_backward_predict_embed():
    model = _model(decay=0.99)
    batch = _crema_batch()
    model.train()
    out = cmvqvae.training_step(model, batch)
    assert set(out) == {"loss", "pred", "task_loss", "recon_loss", "vq_loss", "mask_penalty"}
    total = out["task_loss"] + out["recon_loss"] + out["vq_loss"] + out["mask_penalty"]
    assert float(out["loss"]) == pytest.approx(float(total), rel=1e-5)
    assert float(out["mask_penalty"]) == pytest.approx(1e-4 * 0.01 * 2 * 4)
    out["loss"].backward()
    for part in ("encoders", "decoders", "solver"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, part).parameters()), part
    model.eval()
    scores, emb = cmvqvae.predict(model, batch), cmvqvae.embed(model, batch)
    assert scores.shape == (5, 3) and torch.allclose(scores.sum(dim=1), torch.ones(5))
    assert emb.shape == (5, 8) and out["pred"].shape == (5,) and not out["pred"].requires_grad


def test_the_middle_real_frame_is_read():
    model = _model()
    batch = _crema_batch(3)
    frames = torch.arange(3, dtype=torch.uint8)[None, :, None, None, None].expand(3, 3, 16, 16, 3)
    batch["video"] = frames.clone() * 40  # frame t has value 40 t
    x = cmvqvae.encoder_input(batch, "video", CREMA["video"], 8, torch.device("cpu"))
    # lengths 3, 1, 2: middle real frames 1, 0, 0
    assert x.shape == (3, 3, 8, 8) and x[:, 0, 0, 0].tolist() == pytest.approx([40 / 255, 0.0, 0.0])


def test_vectors_sequences_and_class_maps():
    schema = {"feat_a": Field("float32", (6,), "npy"), "feat_b": Field("float32", (None, 5), "npy"),
              "image": Field("float32", (12, 8), "npy"),
              "label": Field("uint8", (12, 8), "png", classes=tuple("vabc"))}
    model = _model(schema, ("feat_a", "feat_b", "image"))
    batch = fake_batch({k: v for k, v in schema.items() if k != "label"}, 4, 1)
    batch["label"] = torch.randint(4, (4, 12, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    out = cmvqvae.training_step(model, batch)
    out["loss"].backward()
    model.eval()
    maps = cmvqvae.predict(model, batch)
    assert model.task == "segmentation" and maps.shape == (4, 12, 8) and maps.dtype == torch.uint8
    assert int(maps.min()) >= 1 and cmvqvae.embed(model, batch).shape == (4, 12)
    fields = ("feat_a", "feat_b", "image")
    assert set(cmvqvae.describe(model)) == {"zeta", *(f"{k}_{f}" for k in ("zeta", "compl", "contr") for f in fields)}


def test_unsupported_fields_are_refused_by_name():
    schema = {**CREMA, "text": Field("str", (), "txt"), "points": Field("float32", (10, 3), "npy")}
    for field in ("text", "points"):
        with pytest.raises(ValueError, match=field):
            _model(schema, ("audio_spec", field))
    with pytest.raises(ValueError, match="image_size"):
        _model(image_size=10)


def test_loop_trains_it_and_describe_reports_the_mask():
    model = _model(decay=0.99)
    batches = [_crema_batch(5, s) for s in range(2)]
    history = loop.fit(cmvqvae, model, batches, epochs=2, lr=1e-3, device="cpu", log=lambda line: None)
    assert len(history["train_loss"]) == 2 and all(math.isfinite(v) for v in history["train_loss"])
    stats = cmvqvae.describe(model)
    assert set(stats) == {"zeta", "compl_audio_spec", "compl_video", "contr_audio_spec", "contr_video"}
    assert sum(v for k, v in stats.items() if k != "zeta") == pytest.approx(100.0)


def test_figures_write_one_deterministic_png(tmp_path):
    model = _model()
    batch = _crema_batch()
    first = cmvqvae.figures(model, batch, tmp_path / "a")
    second = cmvqvae.figures(model, batch, tmp_path / "b")
    assert [p.name for p in first] == ["reconstructions.png"]
    data = first[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == second[0].read_bytes()
    vectors = {"feat_a": Field("float32", (6,), "npy"), "label": CREMA["label"]}
    assert cmvqvae.figures(_model(vectors, ("feat_a",)), fake_batch(vectors, 3), tmp_path / "c") == []
