"""CMU-MOSEI: the synthetic mini's release files, the reader on each, emotions, and the pipeline defaults."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mmdata.corpora import get_corpus, mosei
from mmdata.corpora.affect.sdk_files import read_folds
from mmdata.corpora.base import REPAIRS, Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.synth import SYNTHS
from mmdata.synth.mosei import generate
from mmdata.types import KEY_PATTERN

SIZES = {"train": 40, "valid": 12, "test": 20}
ALL = ("mmsa", "mult", "multibench", "sdk")
SDK_FILES = ["CMU_MOSEI_COVAREP.csd", "CMU_MOSEI_Labels.csd", "CMU_MOSEI_TimestampedWordVectors.csd",
             "CMU_MOSEI_TimestampedWords.csd", "CMU_MOSEI_VisualFacet42.csd", "cmu_mosei_std_folds.py"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MOSEI mini in all four releases."""
    return generate(tmp_path_factory.mktemp("mosei"), seed=2, **SIZES, releases=ALL)


def read(root: Path | str, split: str, **options) -> tuple[list[dict], list[Skip]]:
    items = list(mosei.iter_samples(root, split, **options))
    return [s for s in items if isinstance(s, dict)], [s for s in items if isinstance(s, Skip)]


def test_registered_and_configured():
    assert get_corpus("mosei") is mosei.CORPUS and SYNTHS["mosei"] is generate
    assert mosei.CORPUS.options() == {"release", "variant", "sdk_vision", "folds"}
    assert mosei.CORPUS.task == "regression"
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert {"lf", "text", "audio", "vision"} <= set(params["experiments"]["mosei"])  # fused vs each modality


def test_default_mini_is_the_sdk_release(tmp_path):
    out = generate(tmp_path, seed=0, train=6, valid=3, test=3)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [f"cmumosei/{name}" for name in SDK_FILES]
    assert "CMU-MultimodalSDK" in mosei.describe(out) and "All Labels" in mosei.describe(out)
    again, other = generate(tmp_path / "again", seed=0, train=6, valid=3, test=3), \
        generate(tmp_path / "other", seed=1, train=6, valid=3, test=3)
    for name in written:  # HDF5 written without timestamps: same seed, same bytes
        assert (out / name).read_bytes() == (again / name).read_bytes()
        assert (out / name).read_bytes() != (other / name).read_bytes()


def test_pickle_layouts(root):
    with open(root / "MOSEI/Processed/unaligned_50.pkl", "rb") as f:
        mmsa = pickle.load(f)["train"]
    assert mmsa["audio"].shape == (40, 500, 74) and mmsa["vision"].shape == (40, 500, 35)
    assert mmsa["text"].shape == (40, 50, 768) and mmsa["audio_lengths"].max() <= 500
    with open(root / "mosei_senti_data.pkl", "rb") as f:
        mult = pickle.load(f)["valid"]
    assert mult["audio"].shape == (12, 50, 74) and mult["labels"].shape == (12, 1, 1)
    assert mult["id"].shape == (12, 3)
    with open(root / "mosei_raw.pkl", "rb") as f:
        raw = pickle.load(f)
    assert raw["test"]["vision"].shape == (20, 50, 35) and raw["test"]["text"].shape == (20, 50, 300)
    assert any(np.isneginf(split["audio"]).any() for split in raw.values())  # as released, loaders zero it


def test_sdk_labels_carry_six_emotions(root):
    with h5py.File(root / "cmumosei/CMU_MOSEI_Labels.csd", "r") as f:
        assert list(f) == ["All Labels"]
        rows = np.concatenate([f[f"All Labels/data/{v}/features"][()] for v in f["All Labels/data"]])
    assert rows.shape[1] == 7 and np.abs(rows[:, 0]).max() <= 3
    assert rows[:, 1:].min() >= 0 and rows[:, 1:].max() <= 3 and rows[:, 1:].any()
    features = mosei.features(root, release="sdk")
    assert features["meta_emotions"].shape == (6,) and features["meta_emotions"].value_range == (0.0, 3.0)
    assert "meta_emotions" not in mosei.features(root, release="mult")  # the pickles hold sentiment only


@pytest.mark.parametrize("release", ALL)
def test_reader_on_each_release(root, release):
    features = mosei.features(root, release=release)
    assert features["feat_audio"].shape == (50, 74) and features["feat_vision"].shape == (50, 35)
    assert features["feat_text"].shape == (50, 768 if release == "mmsa" else 300)
    for split, n in SIZES.items():
        samples, skips = read(root, split, release=release)
        assert len(samples) == n and not skips
        keys = [s["__key__"] for s in samples]
        assert len(set(keys)) == n and all(KEY_PATTERN.match(k) and k.startswith(f"mosei/{split}/") for k in keys)
        for sample in samples:
            check_sample({k: v for k, v in sample.items() if k != REPAIRS}, features)


def test_releases_hold_the_same_clips(root):
    rows = {r: read(root, "train", release=r)[0] for r in ALL}
    keys = {r: [s["__key__"] for s in v] for r, v in rows.items()}
    assert all(k == keys["sdk"] for k in keys.values())
    for r in ALL:
        for a, b in zip(rows[r], rows["sdk"]):
            np.testing.assert_array_equal(a["label"], b["label"])
            for field in ("feat_audio", "feat_vision") + (() if r == "mmsa" else ("feat_text",)):
                np.testing.assert_array_equal(a[field], b[field], err_msg=f"{r} {field}")
    sdk = rows["sdk"]
    assert all(s["meta_emotions"].shape == (6,) for s in sdk)
    assert [s["text"] for s in rows["mmsa"]] == [s["text"] for s in sdk]


def test_unaligned_lengths_kept(root):
    mmsa, _ = read(root, "test", release="mmsa", variant="unaligned")
    sdk, _ = read(root, "test", release="sdk", variant="unaligned")
    lengths = [len(s["feat_audio"]) for s in mmsa]
    assert lengths == [len(s["feat_audio"]) for s in sdk] and len(set(lengths)) > 5
    mult, _ = read(root, "test", release="mult", variant="unaligned")
    assert {s["feat_audio"].shape for s in mult} == {(500, 74)}  # MulT: padded, no lengths


def test_bad_emotions_and_labels_are_skipped(root, tmp_path):
    out = generate(tmp_path, seed=2, train=8, valid=2, test=2)
    path = out / "cmumosei/CMU_MOSEI_Labels.csd"
    video = read_folds(out / "cmumosei/cmu_mosei_std_folds.py", "CMU-MOSEI")["train"][0]
    with h5py.File(path, "r+") as f:
        rows = f[f"All Labels/data/{video}/features"]
        values = rows[()]
        values[0, 3] = 4.0  # anger above 3
        values[1, 0] = np.nan  # sentiment
        rows[...] = values
    samples, skips = read(out, "train")
    assert [(s.key, s.reason) for s in skips] == [(f"mosei/train/{video}_1", "label_range"),
                                                  (f"mosei/train/{video}_2", "label_range")]
    assert "meta_emotions" in skips[0].detail and len(samples) + len(skips) == 8


def test_bad_options(root):
    with pytest.raises(ConfigError, match="valid: facet42, facet41, openface"):
        mosei.features(root, sdk_vision="vgg")
    with pytest.raises(ConfigError, match="unknown split"):
        read(root, "dev")


def _pooled(samples: list[dict], names: list[str]) -> np.ndarray:
    parts = []
    for name in names:
        x = np.stack([s[name] for s in samples])
        steps = np.maximum((np.abs(x).sum(-1) > 0).sum(1, keepdims=True), 1)
        parts.append(x.sum(1) / steps)
    return np.concatenate(parts, axis=1)


def test_signal_needs_all_modalities(tmp_path):
    out = generate(tmp_path, seed=0, train=200, valid=2, test=100)
    train, _ = read(out, "train")
    test, _ = read(out, "test")
    y, y_test = (np.array([float(s["label"]) for s in d]) for d in (train, test))

    def mae(names: list[str]) -> float:
        x, x_test = _pooled(train, names), _pooled(test, names)
        mean = x.mean(0)
        w = np.linalg.solve((x - mean).T @ (x - mean) + 30 * np.eye(x.shape[1]), (x - mean).T @ (y - y.mean()))
        return float(np.abs((x_test - mean) @ w + y.mean() - y_test).mean())

    both, text = mae(["feat_text", "feat_audio", "feat_vision"]), mae(["feat_text"])
    assert both < text - 0.1 and both < mae(["feat_audio", "feat_vision"]) - 0.3
