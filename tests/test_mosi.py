"""CMU-MOSI: the synthetic mini's four release files, and the reader on each of them and on broken copies."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmdata.corpora import get_corpus, mosi
from mmdata.corpora.base import REPAIRS, Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.synth import SYNTHS
from mmdata.synth.mosi import generate
from mmdata.types import KEY_PATTERN

SIZES = {"train": 160, "valid": 40, "test": 80}
FILES = {("mmsa", "aligned"): "MOSI/Processed/aligned_50.pkl",
         ("mmsa", "unaligned"): "MOSI/Processed/unaligned_50.pkl",
         ("mult", "aligned"): "mosi_data.pkl", ("mult", "unaligned"): "mosi_data_noalign.pkl"}
MMSA_KEYS = ["raw_text", "audio", "vision", "id", "text", "text_bert", "annotations", "classification_labels",
             "regression_labels"]
MULT_KEYS = ["vision", "audio", "text", "labels", "id"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-size synthetic mini (written once for the module)."""
    return generate(tmp_path_factory.mktemp("mosi"), seed=0)


def load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def read(root: Path | str, split: str, **options) -> tuple[list[dict], list[Skip]]:
    """(samples, skips) of one split."""
    items = list(mosi.iter_samples(root, split, **options))
    return [s for s in items if isinstance(s, dict)], [s for s in items if isinstance(s, Skip)]


def test_registered():
    assert get_corpus("mosi") is mosi.CORPUS
    assert SYNTHS["mosi"] is generate
    assert mosi.CORPUS.options() == {"release", "variant", "sdk_vision", "folds"}
    assert mosi.CORPUS.task == "regression" and mosi.CORPUS.splits == ("train", "valid", "test")


def test_generate_mmsa_layout(root):
    for variant, (la, lv) in (("aligned", (50, 50)), ("unaligned", (375, 500))):
        data = load(root / FILES["mmsa", variant])
        assert list(data) == ["train", "valid", "test"]
        for split, n in SIZES.items():
            t = data[split]
            extra = ["audio_lengths", "vision_lengths"] if variant == "unaligned" else []
            assert list(t) == MMSA_KEYS + extra
            assert t["audio"].shape == (n, la, 5) and t["vision"].shape == (n, lv, 20)
            assert t["text"].shape == (n, 50, 768) and t["text_bert"].shape == (n, 3, 50)
            for name in ("audio", "vision", "text", "text_bert", "regression_labels",
                         "classification_labels"):
                assert t[name].dtype == np.float32, name
            assert all("$_$" in i for i in t["id"]) and all(isinstance(s, str) for s in t["raw_text"])
            y = t["regression_labels"]
            assert y.shape == (n,) and np.abs(y).max() <= 3 and (y == 0).any()
            assert set(t["annotations"]) <= {"Negative", "Neutral", "Positive"}
            np.testing.assert_array_equal(t["classification_labels"], np.sign(y) + 1)
            assert np.isneginf(t["audio"]).any() and np.isfinite(t["vision"]).all()
            if variant == "unaligned":
                lengths = t["audio_lengths"]
                assert lengths.shape == (n,) and lengths.min() > 0 and lengths.max() <= 375
                beyond = np.arange(375)[None, :] >= lengths[:, None]
                assert (t["audio"][beyond] == 0).all()


def test_generate_mult_layout(root):
    for variant, (la, lv) in (("aligned", (50, 50)), ("unaligned", (375, 500))):
        data = load(root / FILES["mult", variant])
        for split, n in SIZES.items():
            t = data[split]
            assert list(t) == MULT_KEYS
            assert t["audio"].shape == (n, la, 5) and t["vision"].shape == (n, lv, 20)
            assert t["text"].shape == (n, 50, 300) and t["labels"].shape == (n, 1, 1)
            assert t["id"].shape == (n, 3) and t["id"].dtype.kind == "S"
            assert all(a.dtype == np.float32 for a in (t["audio"], t["vision"], t["text"], t["labels"]))
            assert np.isneginf(t["audio"]).any()


def test_generate_video_disjoint(root):
    data = load(root / FILES["mult", "aligned"])
    videos = {s: {bytes(v) for v in data[s]["id"][:, 0]} for s in SIZES}
    assert all(len(v) > 1 for v in videos.values())
    assert not (videos["train"] & videos["valid"] or videos["train"] & videos["test"]
                or videos["valid"] & videos["test"])
    assert all(len(v) == 11 for v in videos["train"])


def test_generate_deterministic(tmp_path):
    a = generate(tmp_path / "a", seed=3, train=12, valid=5, test=6)
    b = generate(tmp_path / "b", seed=3, train=12, valid=5, test=6)
    c = generate(tmp_path / "c", seed=4, train=12, valid=5, test=6)
    for name in FILES.values():
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() != (c / name).read_bytes(), name


@pytest.mark.parametrize("release,variant", sorted(FILES))
def test_reader_on_each_file(root, release, variant):
    path = root / FILES[release, variant]
    assert mosi.sources(root, release=release, variant=variant) == [path]
    features = mosi.features(path, variant=variant)
    assert ("text" in features) == (release == "mmsa")
    raw = load(path)
    for split, n in SIZES.items():
        samples, skips = read(path, split, variant=variant)
        assert len(samples) == n and not skips
        keys = [s["__key__"] for s in samples]
        assert len(set(keys)) == n and all(KEY_PATTERN.match(k) for k in keys)
        assert all(k.startswith(f"mosi/{split}/") for k in keys)
        audio_inf = np.isneginf(raw[split]["audio"]).any(axis=(1, 2))
        assert [REPAIRS in s for s in samples] == list(audio_inf)
        for sample in samples:
            assert sample.get(REPAIRS, ("neg_inf_to_zero",)) == ("neg_inf_to_zero",)
            clean = {k: v for k, v in sample.items() if k != REPAIRS}
            check_sample(clean, features)
            assert not np.isneginf(sample["feat_audio"]).any()
            assert sample["feat_audio"].flags.c_contiguous and sample["label"].shape == ()


def test_releases_give_same_samples(root):
    for split in SIZES:
        mmsa, _ = read(root, split, release="mmsa")
        mult, _ = read(root, split, release="mult")
        assert [s["__key__"] for s in mmsa] == [s["__key__"] for s in mult]
        for a, b in zip(mmsa, mult):
            for name in ("feat_audio", "feat_vision", "label"):
                np.testing.assert_array_equal(a[name], b[name])
        un_mmsa, _ = read(root, split, release="mmsa", variant="unaligned")
        un_mult, _ = read(root, split, release="mult", variant="unaligned")
        for a, b in zip(un_mmsa, un_mult):
            assert a["__key__"] == b["__key__"]
            for name in ("feat_audio", "feat_vision"):
                np.testing.assert_array_equal(a[name], b[name][:len(a[name])])


def test_unaligned_mmsa_lengths(root):
    raw = load(root / FILES["mmsa", "unaligned"])["test"]
    samples, _ = read(root, "test", variant="unaligned")
    assert [len(s["feat_audio"]) for s in samples] == list(raw["audio_lengths"])
    assert [len(s["feat_vision"]) for s in samples] == list(raw["vision_lengths"])
    assert len({len(s["feat_audio"]) for s in samples}) > 5


def test_keys_follow_ids(root):
    raw = load(root / FILES["mmsa", "aligned"])["valid"]
    samples, _ = read(root, "valid")
    video, clip = raw["id"][0].split("$_$")
    assert samples[0]["__key__"] == f"mosi/valid/{video.lstrip('-')}_{clip}"
    assert samples[0]["text"] == raw["raw_text"][0]


def corrupt(src: Path, dst: Path, edit) -> Path:
    data = load(src)
    edit(data["train"])
    with open(dst, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return dst


def test_bad_rows_are_skipped(root, tmp_path):
    def edit(t):
        t["audio"][2, 3, 1] = np.nan
        t["vision"][4, 0:2, 0] = np.inf
        t["vision"][4, 2, 1] = -np.inf  # -inf is repaired in audio only, as the releases' loaders do
        t["regression_labels"][5] = 5.0
        t["regression_labels"][6] = np.nan
        t["audio_lengths"][7] = 0
        t["vision_lengths"][8] = 501
        t["raw_text"][9] = "  "

    path = corrupt(root / FILES["mmsa", "unaligned"], tmp_path / "bad.pkl", edit)
    samples, skips = read(path, "train", variant="unaligned")
    assert len(samples) + len(skips) == SIZES["train"]
    got = {s.key: (s.reason, s.detail) for s in skips}
    keys = [s.key for s in skips]
    assert [got[k][0] for k in keys] == ["non_finite", "non_finite", "label_range", "label_range", "length",
                                         "length", "empty_text"]
    assert "feat_audio" in got[keys[0]][1] and "1 of" in got[keys[0]][1]
    assert "feat_vision" in got[keys[1]][1] and "3 of" in got[keys[1]][1]
    assert all(s.source == str(path) for s in skips)


def test_bad_mult_rows_are_skipped(root, tmp_path):
    def edit(t):
        t["audio"][0, -1, 0] = np.nan
        t["labels"][1, 0, 0] = 5.0

    path = corrupt(root / FILES["mult", "aligned"], tmp_path / "bad.pkl", edit)
    samples, skips = read(path, "train")
    assert [s.reason for s in skips] == ["non_finite", "label_range"]
    assert len(samples) + len(skips) == SIZES["train"]


def test_wrong_dims_skip_as_shape(root, tmp_path):
    def edit(t):
        t["vision"] = t["vision"][:, :, :19]

    path = corrupt(root / FILES["mult", "aligned"], tmp_path / "bad.pkl", edit)
    _, skips = read(path, "train")
    assert len(skips) == SIZES["train"] and {s.reason for s in skips} == {"shape"}


def test_mismatched_row_counts_raise(root, tmp_path):
    def edit(t):
        t["labels"] = t["labels"][:-1]

    path = corrupt(root / FILES["mult", "aligned"], tmp_path / "short.pkl", edit)
    with pytest.raises(ValueError, match=r"short\.pkl.*'train'.*159"):
        read(path, "train")


def test_bad_options(root, tmp_path):
    with pytest.raises(ConfigError, match="aligned, unaligned"):
        read(root, "train", variant="raw")
    with pytest.raises(ConfigError, match="auto, mmsa, mult, multibench, sdk"):
        mosi.features(root, release="nope")
    with pytest.raises(ConfigError, match=r"no aligned sdk release.*looked for.*\*\.csd"):
        mosi.features(root, release="sdk")  # the default mini writes the two pickle families only
    with pytest.raises(ConfigError, match="does not exist"):
        mosi.features(tmp_path / "missing")
    with pytest.raises(ConfigError, match="looked for"):
        mosi.features(tmp_path)
    with pytest.raises(ConfigError, match="set variant: unaligned"):
        mosi.features(root / FILES["mult", "unaligned"])
    with pytest.raises(ConfigError, match="set release: mmsa"):
        mosi.features(root / FILES["mmsa", "aligned"], release="mult")
    with pytest.raises(ConfigError, match="unknown split"):
        read(root, "dev")


def test_auto_detection(root, tmp_path):
    assert str(root / FILES["mmsa", "aligned"]) in mosi.describe(root)
    assert "MMSA" in mosi.describe(root)
    assert str(root / FILES["mult", "unaligned"]) in mosi.describe(root, release="mult", variant="unaligned")
    only_mult = tmp_path / "mult"
    only_mult.mkdir()
    shutil.copy(root / FILES["mult", "aligned"], only_mult / "mosi_data.pkl")
    assert "MulT" in mosi.describe(only_mult) and mosi.features(only_mult)["feat_text"].shape == (50, 300)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(root / FILES["mmsa", "unaligned"], flat / "renamed.pkl")  # family from keys, not name
    assert mosi.sources(flat / "renamed.pkl", variant="unaligned") == [flat / "renamed.pkl"]
    assert mosi.features(flat / "renamed.pkl", variant="unaligned")["feat_audio"].shape == (None, 5)
    shutil.copy(root / FILES["mmsa", "aligned"], flat / "aligned_50.pkl")
    assert mosi.sources(flat) == [flat / "aligned_50.pkl"]


def _pooled(root: Path, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mean over non-padding steps of each modality [N, dim], and labels [N]."""
    samples, _ = read(root, split, release="mult")
    out = {}
    for name in ("feat_text", "feat_audio", "feat_vision"):
        x = np.stack([s[name] for s in samples])
        steps = np.maximum((np.abs(x).sum(-1) > 0).sum(1, keepdims=True), 1)
        out[name] = x.sum(1) / steps
    return out, np.array([float(s["label"]) for s in samples])


def _ridge_scores(train, y, test, y_test, names) -> tuple[float, float]:
    """(MAE, non-zero binary accuracy) of a ridge fit on the pooled features of ``names``."""
    x, x_test = (np.concatenate([d[n] for n in names], 1) for d in (train, test))
    mean = x.mean(0)
    w = np.linalg.solve((x - mean).T @ (x - mean) + 30.0 * np.eye(x.shape[1]), (x - mean).T @ (y - y.mean()))
    pred = (x_test - mean) @ w + y.mean()
    nonzero = y_test != 0
    return float(np.abs(pred - y_test).mean()), float(((pred > 0) == (y_test > 0))[nonzero].mean())


def test_signal_needs_all_modalities(root):
    train, y = _pooled(root, "train")
    test, y_test = _pooled(root, "test")
    text = _ridge_scores(train, y, test, y_test, ["feat_text"])
    av = _ridge_scores(train, y, test, y_test, ["feat_audio", "feat_vision"])
    both = _ridge_scores(train, y, test, y_test, ["feat_text", "feat_audio", "feat_vision"])
    assert both[0] < text[0] - 0.1 and both[0] < av[0] - 0.3
    assert both[1] > text[1] + 0.05 and both[1] > av[1] + 0.15
