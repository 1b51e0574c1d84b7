"""Augmenters: kernel and augmenter contracts, shared geometry, batched == per-sample, worker invariance, ROBUSTAUC."""
from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import mmdata
from mmdata.augment import AUGMENTERS, KERNELS, OPS, Augmenter, default_policy
from mmdata.augment.audio import is_spectrogram, shift_audio, timemask_audio
from mmdata.augment.batched import BATCHED, augment_batch, loader_rngs
from mmdata.augment.image import flip_normal, rotate_depth, rotate_normal, sample_grid
from mmdata.metrics.robustness import corrupt, robust_auc
from mmdata.rng import make_rng
from mmdata.shards.collate import collate
from mmdata.types import MODALITIES, Field, field_modality
from tests.conftest import write_toy


def _unit(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    n = rng.standard_normal(shape).astype(np.float32)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _examples() -> list[tuple[str, object]]:
    """(field name, value) inputs covering every modality, dtype and layout the kernels accept."""
    rng = make_rng(0, "examples")
    return [
        ("image", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)),
        ("image_gray", rng.random((12, 10)).astype(np.float32)),
        ("depth", (rng.random((12, 10)) * 5).astype(np.float32)),
        ("depth_raw", rng.integers(0, 60000, (12, 10), dtype=np.uint16)),
        ("normal", _unit((12, 10, 3), rng)),
        ("normal_png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)),
        ("label_seg", rng.integers(0, 40, (12, 10), dtype=np.int64)),
        ("label", np.int64(3)),
        ("points", rng.standard_normal((50, 4)).astype(np.float32)),
        ("points_xyz", rng.standard_normal((30, 3))),
        ("audio", rng.standard_normal(400).astype(np.float32)),
        ("audio_stereo", rng.standard_normal((2, 400)).astype(np.float32)),
        ("audio_spec", rng.integers(0, 256, (20, 30), dtype=np.uint8)),
        ("video", rng.integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)),
        ("text", "the quick brown fox jumps over the lazy dog"),
        ("feat_audio", rng.standard_normal((9, 5)).astype(np.float32)),
        ("series", rng.standard_normal(20).astype(np.float32)),
        ("series_prices", rng.standard_normal((20, 2)).astype(np.float32)),
    ]


def _fits(kernel: str, name: str) -> bool:
    op = OPS[kernel]
    if field_modality(name) != kernel.rsplit("_", 1)[1]:
        return False
    return not op.needs or (op.needs == "spectrogram") == is_spectrogram(name)


def _cases(kernel: str) -> list[tuple[str, object]]:
    return [(n, v) for n, v in _examples() if _fits(kernel, n)]


def _same(a: object, b: object) -> bool:
    """Deep equality of values and parameter dicts (arrays compared exactly, dtype included)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, np.generic)):
        return isinstance(b, (np.ndarray, np.generic)) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _draw(kernel: str, value: object, strength: float, seed: int = 0) -> dict:
    return OPS[kernel].draw(make_rng(seed, "draw", kernel), strength, value, {})


# --- registry conventions -------------------------------------------------------------------------------------

def test_registry_names_and_docstrings():
    assert set(KERNELS) == set(OPS)
    for name, kernel in KERNELS.items():
        op, modality = name.rsplit("_", 1)
        assert modality in MODALITIES and op.isalpha(), name
        assert kernel.__doc__ and OPS[name].draw.__doc__, name
        assert _cases(name), f"no example input for {name}"
    for modality, ops in AUGMENTERS.items():
        assert all(f"{op}_{modality}" in OPS for op in ops), modality
    assert set(BATCHED) <= set(KERNELS)


def test_modules_are_small():
    for path in Path(mmdata.__file__).parent.joinpath("augment").glob("*.py"):
        assert len(path.read_text().splitlines()) < 300, path


# --- kernel contract ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_kernel_contract(kernel):
    op, changed = OPS[kernel], False
    for name, value in _cases(kernel):
        before = copy.deepcopy(value)
        params = _draw(kernel, value, 1.0)
        assert _same(params, _draw(kernel, value, 1.0)), "same seed, different parameters"
        out = op.kernel(value, **params)
        assert _same(value, before), f"{kernel} mutated its input ({name})"
        assert _same(out, op.kernel(value, **params)), f"{kernel} is not deterministic ({name})"
        if isinstance(value, str):
            assert isinstance(out, str)
        else:
            assert np.asarray(out).dtype == np.asarray(value).dtype, (kernel, name)
            if np.ndim(value):
                assert not np.shares_memory(out, value), f"{kernel} returned a view of its input"
            if op.changes_length:
                axis = -1 if kernel.endswith("audio") else 0
                shape = list(np.shape(value))
                shape[axis] = np.shape(out)[axis]
                assert np.shape(out) == tuple(shape) and np.shape(out)[axis] >= 1
            else:
                assert np.shape(out) == np.shape(value), (kernel, name)
            assert np.all(np.isfinite(np.asarray(out, dtype=np.float64)))
        assert _same(op.kernel(value, **_draw(kernel, value, 0.0)), value), f"{kernel} at strength 0 ({name})"
        changed |= any(not _same(op.kernel(value, **_draw(kernel, value, 1.0, s)), value) for s in range(8))
    assert changed, f"{kernel} at strength 1 never changed any example"


# --- augmenter contract ---------------------------------------------------------------------------------------

_FIELD_OF = {"audio": "audio_spec", "feat": "feat_audio"}


def _sample_with(modality: str) -> dict:
    examples = dict(_examples())
    name = _FIELD_OF.get(modality, modality)
    other = ("feat_other", np.ones((3, 2), np.float32)) if modality == "text" else ("text_title", "untouched")
    return {"__key__": "toy/train/s0001", name: examples[name], "label": np.int64(2), "meta": {"id": 7},
            other[0]: other[1]}


@pytest.mark.parametrize("modality", sorted(AUGMENTERS))
def test_augmenter_contract(modality):
    sample = _sample_with(modality)
    before = copy.deepcopy(sample)
    aug = Augmenter({modality: AUGMENTERS[modality]}, strength=0.7, p=0.9)
    rng = lambda epoch=0: make_rng(1, "augment", epoch, sample["__key__"])  # noqa: E731
    out = aug(sample, rng())
    assert _same(sample, before), "input mutated"
    assert _same(out, aug(sample, rng())), "not deterministic"
    assert _same(out, pickle.loads(pickle.dumps(aug))(sample, rng())), "pickle round trip changed the draws"
    for key in sample.keys() - {_FIELD_OF.get(modality, modality)}:
        assert out[key] is sample[key], f"untouched field {key} was replaced"
    assert out.keys() == sample.keys()
    assert _same(Augmenter({modality: AUGMENTERS[modality]}, strength=0.0)(sample, rng()), sample)
    epochs = [Augmenter({modality: AUGMENTERS[modality]}, strength=1.0)(sample, rng(e)) for e in range(4)]
    assert not all(_same(epochs[0], e) for e in epochs[1:]), "same augmentation in every epoch (AUG-03)"


def test_augmenter_validation():
    with pytest.raises(ValueError, match="valid for image"):
        Augmenter({"image": ["twirl"]})
    with pytest.raises(ValueError, match="is for modality 'depth'"):
        Augmenter({"image": ["rotate_depth"]})
    with pytest.raises(ValueError, match="AUG-06"):
        Augmenter({"series": ["reverse"]})
    with pytest.raises(ValueError, match="text_in_image"):
        Augmenter({"image": ["flip"]}, text_in_image=True)
    with pytest.raises(ValueError, match="spectrogram"):
        Augmenter({"audio_wave": ["freqmask"]})
    with pytest.raises(ValueError, match="waveform"):
        Augmenter({"audio_spec": ["gain"]})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Augmenter({"image": ["noise"]}, strength=1.5)
    with pytest.raises(ValueError, match="no strength"):
        Augmenter({"image": ["noise"], "depth": ["rotate"]}, strength={"image": 0.3})
    with pytest.raises(ValueError, match="geometric ops must match"):
        Augmenter({"image": ["rotate", "crop"], "depth": ["crop"]})
    Augmenter({"image": ["rotate", "crop"], "depth": ["crop"]}, share_geometry=False)
    with pytest.raises(ValueError, match="p="):
        Augmenter({"image": ["noise"]}, p=2)


def test_default_policy_fits_fields():
    features = {"image": Field("uint8", (8, 8, 3), "jpg"), "audio_spec": Field("uint8", (20, 30), "npy"),
                "audio": Field("float32", (None,), "npy", rate=16000), "video": Field("uint8", (8, 4, 4, 3), "npy"),
                "label": Field("int64", (8, 8), "png"), "feat_text": Field("float32", (50, 8), "npy")}
    policy = default_policy(features, text_in_image=True)
    assert "freqmask" in policy["audio_spec"] and "gain" not in policy["audio_spec"]
    assert "gain" in policy["audio"] and "freqmask" not in policy["audio"]
    assert "timecrop" not in policy["video"], "fixed-length video must not be shortened"
    assert policy["label"] == ("rotate", "crop") and "flip" not in policy["image"]
    assert Augmenter.from_features(features).rates == {"audio": 16000.0}


def test_check_finite_names_key_and_op():
    sample = {"__key__": "toy/train/bad", "feat_audio": np.array([[np.nan, 1.0], [0.0, 2.0]], np.float32)}
    aug = Augmenter({"feat": ["noise"]}, strength=1.0, check_finite=True)
    with pytest.raises(FloatingPointError, match="toy/train/bad.*feat_audio|noise_feat"):
        aug(sample, make_rng(0))


def test_constant_inputs_stay_finite():
    """AUG-02: ranges and norms of constant or zero inputs are guarded."""
    sample = {"__key__": "k", "image": np.full((6, 6), 0.5, np.float32), "depth": np.zeros((6, 6), np.float32),
              "normal": np.zeros((6, 6, 3), np.float32), "feat_audio": np.ones((1, 3), np.float32),
              "audio": np.zeros(50, np.float32)}
    out = Augmenter({m: AUGMENTERS[m] for m in ("image", "depth", "normal", "feat", "audio")}, strength=1.0,
                    check_finite=True)(sample, make_rng(0))
    assert all(np.isfinite(out[k]).all() for k in sample if k != "__key__")


def test_tiny_and_empty_inputs_never_raise():
    """AUG-01: crops are fractions of the input, masks fit the axis: degenerate inputs pass without errors."""
    tiny = {"image": np.zeros((1, 1, 3), np.uint8), "depth": np.zeros((1, 2), np.float32),
            "normal": np.zeros((1, 1, 3), np.float32), "points": np.zeros((0, 4), np.float32),
            "audio": np.zeros(0, np.float32), "audio_spec": np.zeros((1, 1), np.uint8),
            "video": np.zeros((1, 1, 1, 3), np.uint8), "text": "", "feat_audio": np.zeros((0, 5), np.float32),
            "series": np.zeros(1, np.float32)}
    policy = {name: AUGMENTERS[field_modality(name)] for name in tiny if name != "audio_spec"}
    policy["audio_spec"] = ("shift", "noise", "timemask", "freqmask")
    aug = Augmenter(policy, strength=1.0, check_finite=True)
    for seed in range(5):
        out = aug({"__key__": "k", **tiny}, make_rng(seed))
        assert out["points"].shape == (0, 4) and out["text"] == ""


# --- shared geometry ------------------------------------------------------------------------------------------

def _centroid(weight: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(weight > 0.25 * weight.max())
    return np.array([ys.mean(), xs.mean()])


@pytest.mark.parametrize("seed, p", [(s, p) for s in range(6) for p in (1.0, 0.5)])
def test_marker_moves_identically_in_image_depth_normal(seed, p):
    """AUG-04: one drawn geometry moves a marker to the same place in every image-like field."""
    image, depth = np.zeros((31, 27, 3), np.uint8), np.zeros((31, 27), np.float32)
    normal = np.zeros((31, 27, 3), np.float32)
    image[7:10, 17:20], depth[7:10, 17:20], normal[7:10, 17:20] = 255, 4.0, (0.0, 0.0, -1.0)
    sample = {"__key__": f"k{seed}", "image": image, "depth": depth, "normal": normal}
    ops = ["rotate", "crop", "flip"]
    out = Augmenter({"image": ops, "depth": ops, "normal": ops}, strength=1.0, p=p)(sample, make_rng(seed))
    where = _centroid(out["image"][..., 0].astype(float))
    assert np.allclose(_centroid(out["depth"]), where, atol=0.75)
    assert np.allclose(_centroid(np.linalg.norm(out["normal"], axis=-1)), where, atol=0.75)


def test_flip_is_pixel_exact_and_negates_normal_x():
    sample = {"__key__": "k", "image": np.arange(12, dtype=np.uint8).reshape(3, 4),
              "depth": np.arange(12, dtype=np.float32).reshape(3, 4),
              "normal": np.tile(np.array([0.6, 0.0, -0.8], np.float32), (3, 4, 1))}
    aug = Augmenter({"image": ["flip"], "depth": ["flip"], "normal": ["flip"]}, strength=1.0)
    flips = [aug(sample, make_rng(s)) for s in range(12)]
    flipped = [o for o in flips if o["image"][0, 0] == 3]
    assert flipped and len(flipped) < len(flips)  # p = 0.5 at strength 1
    for out in flips:
        mirrored = out["image"][0, 0] == 3
        assert (out["depth"][0, 0] == 3) == mirrored
        assert np.allclose(out["normal"][..., 0], -0.6 if mirrored else 0.6)
    png = np.full((2, 2, 3), 200, np.uint8)
    assert np.array_equal(flip_normal(png, flip=True)[..., 0], np.full((2, 2), 55, np.uint8))


def _plane(f: float, h: int, w: int, n: np.ndarray, d: float) -> np.ndarray:
    """Depth Z of the plane n . P = d seen by a pinhole camera (x right, y down, z forward)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(xs - (w - 1) / 2) / f, (ys - (h - 1) / 2) / f, np.ones_like(xs)], axis=-1)
    return d / (rays @ n)


@pytest.mark.parametrize("angle", [30.0, -17.5, 90.0])
def test_rotated_plane_normals_and_depth_match_the_rotated_plane(angle):
    """Rotating a plane's normal map equals the analytically rotated normal; depth follows the same plane."""
    n0 = np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8])
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    turn = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # R = [[F, 0], [0, 1]]
    h = w = 41
    inside = np.hypot(*np.mgrid[0:h, 0:w] - (h - 1) / 2) < 18  # pixels whose source lies inside the image
    for normals, tol in ((np.tile(n0.astype(np.float32), (h, w, 1)), 1e-5),
                         (np.rint((np.tile(n0, (h, w, 1)) + 1) * 127.5).astype(np.uint8), 2 / 127.5)):
        out = rotate_normal(normals, angle=angle)
        vectors = out.astype(np.float64) / 127.5 - 1 if out.dtype == np.uint8 else out.astype(np.float64)
        assert np.allclose(vectors[inside], turn @ n0, atol=tol)
        assert np.allclose(np.linalg.norm(vectors[inside], axis=-1), 1.0, atol=tol)
    depth = _plane(30.0, h, w, n0, -4.0)
    expected = _plane(30.0, h, w, turn @ n0, -4.0)
    gradient = max(np.abs(np.gradient(expected)[0]).max(), np.abs(np.gradient(expected)[1]).max())
    assert np.all(np.abs(rotate_depth(depth, angle=angle) - expected)[inside] <= 0.75 * gradient + 1e-9)


def test_audio_and_video_crops_share_one_window_in_seconds():
    fps, rate = 10.0, 1000.0
    video = np.arange(30, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)  # 3 s
    audio = np.arange(3200, dtype=np.float32) / rate  # 3.2 s: longer than the video
    sample = {"__key__": "k", "video": video, "audio": audio}
    aug = Augmenter({"video": ["timecrop"], "audio": ["timecrop"]}, strength=1.0, rates={"video": fps, "audio": rate})
    lengths = set()
    for seed in range(10):
        out = aug(sample, make_rng(seed))
        start_v, start_a = out["video"][0, 0, 0, 0] / fps, out["audio"][0]
        assert abs(start_v - start_a) <= 0.5 / fps
        assert abs(len(out["video"]) / fps - len(out["audio"]) / rate) <= 1 / fps
        assert out["video"][-1, 0, 0, 0] / fps <= 3.0 and out["audio"][-1] < 3.0 + 1 / fps  # common duration
        lengths.add(len(out["video"]))
    assert len(lengths) > 1 and min(lengths) >= 15  # windows vary and keep >= 50% at strength 1


# --- vectorised vs naive --------------------------------------------------------------------------------------

def test_sample_grid_matches_naive_bilinear():
    rng = make_rng(0, "grid")
    value = rng.random((7, 9, 2)).astype(np.float32)
    xs, ys = rng.uniform(-2, 10, (5, 6)), rng.uniform(-2, 8, (5, 6))
    fast = sample_grid(value, xs, ys)
    for i in range(5):
        for j in range(6):
            x, y, acc = xs[i, j], ys[i, j], np.zeros(2)
            for yy in (math.floor(y), math.floor(y) + 1):
                for xx in (math.floor(x), math.floor(x) + 1):
                    if 0 <= xx < 9 and 0 <= yy < 7:
                        acc += (1 - abs(x - xx)) * (1 - abs(y - yy)) * value[yy, xx]
            assert np.allclose(fast[i, j], acc, atol=1e-5)
    near = sample_grid(value, xs, ys, nearest=True)
    for i in range(5):
        for j in range(6):
            xx, yy = math.floor(xs[i, j] + 0.5), math.floor(ys[i, j] + 0.5)
            expect = value[yy, xx] if 0 <= xx < 9 and 0 <= yy < 7 else 0
            assert np.array_equal(near[i, j], np.broadcast_to(expect, (2,)))


def test_shift_and_mask_match_naive_loops():
    wave = np.arange(1, 11, dtype=np.float32)
    for shift in (-12, -3, 0, 4, 12):
        naive = [wave[t - shift] if 0 <= t - shift < 10 else 0 for t in range(10)]
        assert np.array_equal(shift_audio(wave, shift=shift), np.array(naive, np.float32))
    spec = np.arange(1, 31, dtype=np.float32).reshape(3, 10)
    naive = spec.copy()
    for t in range(2, 6):
        naive[:, t] = 0
    assert np.array_equal(timemask_audio(spec, start=2, width=4), naive)


# --- batched forms == per-sample forms ------------------------------------------------------------------------

BATCH_FEATURES = {
    "image": Field("uint8", (12, 10, 3), "npy"), "image_gray": Field("float32", (12, 10), "npy"),
    "depth": Field("float32", (12, 10), "npy"), "normal": Field("float32", (12, 10, 3), "npy"),
    "normal_png": Field("uint8", (12, 10, 3), "npy"), "label_seg": Field("int64", (12, 10), "npy"),
    "audio": Field("float32", (400,), "npy"), "audio_spec": Field("uint8", (20, 30), "npy"),
    "video": Field("uint8", (6, 8, 10, 3), "npy"), "text": Field("str", (), "txt"),
    "feat_audio": Field("float32", (None, 5), "npy"), "series": Field("float32", (20,), "npy"),
    "label": Field("int64", (), "cls"),
}


def _batch_samples(n: int = 6) -> list[dict]:
    rng, examples = make_rng(5, "batch"), dict(_examples())
    samples = []
    for i in range(n):
        sample = {"__key__": f"toy/train/s{i:04d}", "label": np.int64(i % 3)}
        for name in BATCH_FEATURES:
            value = examples.get(name)
            if isinstance(value, np.ndarray):  # a different value per row, same shape and dtype
                value = np.roll(value, i, axis=0)
            sample[name] = value if name != "feat_audio" else rng.standard_normal((2 + i, 5)).astype(np.float32)
        samples.append(sample)
    return samples


def _assert_batches_equal(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, want in expected.items():
        got = actual[name]
        if not isinstance(want, torch.Tensor):
            assert want == got, name
            continue
        got = got.cpu()
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if want.dtype.is_floating_point:
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), name
        else:  # a reduction (jitter's mean) may round to the other integer, rarely
            diff = (got.long() - want.long()).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.01, name


@pytest.mark.parametrize("strength, p", [(1.0, 1.0), (0.6, 0.5)])
def test_batched_equals_per_sample(strength, p):
    samples, fields = _batch_samples(), list(BATCH_FEATURES)
    aug = Augmenter.from_features(BATCH_FEATURES, strength=strength, p=p)
    rngs = lambda: loader_rngs([s["__key__"] for s in samples], seed=11, epoch=2)  # noqa: E731
    per_sample = collate([aug(s, r) for s, r in zip(samples, rngs())], BATCH_FEATURES, fields)
    batch = collate(samples, BATCH_FEATURES, fields)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in batch.items()}
    _assert_batches_equal(per_sample, augment_batch(aug, batch, rngs()))
    _assert_batches_equal(before, batch)  # the input batch is not written into
    if torch.cuda.is_available():
        on_gpu = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        _assert_batches_equal(per_sample, augment_batch(aug, on_gpu, rngs()))


def test_batched_refuses_length_changes():
    samples = [{"__key__": "k", "audio": np.zeros(100, np.float32)}]
    batch = collate(samples, {"audio": Field("float32", (100,), "npy")}, ["audio"])
    with pytest.raises(ValueError, match="changes lengths"):
        augment_batch(Augmenter({"audio": ["timecrop"]}, strength=1.0), batch, [make_rng(0)])


# --- reproducibility across workers ---------------------------------------------------------------------------

def test_same_batches_for_any_worker_count(tmp_path):
    write_toy(tmp_path / "toy" / "train")
    aug = Augmenter({"image": ["rotate", "crop", "noise"], "feat_audio": ["noise", "timemask"],
                     "text": ["dropout", "swap"]}, strength=0.8, p=0.8)

    def run(workers: int, augment=aug) -> list[dict]:
        return list(mmdata.load(tmp_path / "toy", "train", batch_size=4, seed=3, epoch=1, augment=augment,
                                num_workers=workers))

    serial, parallel, plain = run(0), run(2), run(0, None)
    assert len(serial) == len(parallel) == 10
    for a, b in zip(serial, parallel):
        _assert_batches_equal(a, b)
        for name, value in a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[name]), name
    assert not torch.equal(serial[0]["image"], plain[0]["image"])


# --- robustness -----------------------------------------------------------------------------------------------

def test_robust_auc_hand_computed():
    levels = [0.0, 0.5, 1.0]
    # differences 0, 0.1, 0.3: trapezoid 0.5 * (0 + 0.1) / 2 + 0.5 * (0.1 + 0.3) / 2 = 0.125; mean 0.4 / 3
    assert robust_auc(levels, [0.9, 0.8, 0.6], [0.9, 0.7, 0.3]) == pytest.approx(0.125)
    assert robust_auc(levels, [0.9, 0.8, 0.6], [0.9, 0.7, 0.3], reduce="mean") == pytest.approx(0.4 / 3)
    # MSE: model errors grow less than the baseline's -> positive after the sign flip
    assert robust_auc(levels, [1.0, 1.2, 1.5], [1.0, 1.4, 2.0], higher_is_better=False) == pytest.approx(0.225)
    assert robust_auc(levels, [0.5, 0.4, 0.1], [0.5, 0.4, 0.1]) == 0.0  # the baseline against itself
    with pytest.raises(ValueError, match="increasing"):
        robust_auc([0.0, 1.0, 0.5], [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="one score per level"):
        robust_auc([0.0, 1.0], [1, 1, 1], [1, 1])


def test_corrupt_levels_scale_the_same_draws():
    sample = {"__key__": "toy/test/s1", "feat_audio": make_rng(0).standard_normal((8, 3)).astype(np.float32),
              "label": np.int64(1), "text": "keep this text"}
    clean = corrupt(sample, 0.0, fields=["feat_audio"])
    assert np.array_equal(clean["feat_audio"], sample["feat_audio"]) and clean["text"] is sample["text"]
    full = corrupt(sample, 1.0, fields=["feat_audio"])["feat_audio"] - sample["feat_audio"]
    half = corrupt(sample, 0.5, fields=["feat_audio"])["feat_audio"] - sample["feat_audio"]
    assert np.allclose(half, 0.5 * full, atol=1e-6)  # common random numbers across levels
    batch = collate([sample, {**sample, "__key__": "toy/test/s2"}],
                    {"feat_audio": Field("float32", (None, 3), "npy")}, ["feat_audio"])
    batched = corrupt(batch, 1.0, fields=["feat_audio"])
    assert torch.allclose(batched["feat_audio"][0], torch.from_numpy(full + sample["feat_audio"]), atol=1e-6)


def test_masks_match_torchaudio():
    functional = pytest.importorskip("torchaudio.functional")
    spec = torch.rand(1, 20, 30) + 1
    for axis, ours in ((2, timemask_audio), (1, None)):
        torch.manual_seed(axis)
        masked = functional.mask_along_axis(spec, mask_param=8, mask_value=0.0, axis=axis)[0].numpy()
        hit = np.flatnonzero((masked == 0).all(axis=0 if axis == 2 else 1))
        start, width = (int(hit[0]), len(hit)) if len(hit) else (0, 0)
        kernel = ours or KERNELS["freqmask_audio"]
        assert np.array_equal(kernel(spec[0].numpy(), start=start, width=width), masked)


def test_default_policy_moves_only_the_cloud_of_split_point_fields():
    """SUN RGB-D's schema splits VoteNet's [N, 3 + F] cloud into aligned fields: only ``points`` is a cloud,
    and ``subsample`` (drawn per field) would misalign its rows with the features'."""
    split = {"points": Field("float32", (64, 3), "npy"), "points_rgb": Field("float32", (64, 3), "npy"),
             "points_height": Field("float32", (64, 1), "npy")}
    policy = default_policy(split)
    assert policy["points_rgb"] == () and policy["points_height"] == ()
    assert "rotate" in policy["points"] and "subsample" not in policy["points"]
    assert "subsample" in default_policy({"points": split["points"]})["points"]
    sample = {"__key__": "k", **{n: np.random.default_rng(0).random(f.shape, dtype=np.float32)
                                 for n, f in split.items()}}
    out = Augmenter.from_features(split, strength=1.0)(sample, make_rng(0))  # no error on [N, 1] heights
    assert np.array_equal(out["points_rgb"], sample["points_rgb"])
    assert np.array_equal(out["points_height"], sample["points_height"])
    assert not np.array_equal(out["points"], sample["points"])
