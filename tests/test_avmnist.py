"""AV-MNIST: the synthetic mini's layout and signal, and the reader's splits, keys, checks and skips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdata.corpora import avmnist
from mmdata.corpora.base import Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import BadInputError, ConfigError
from mmdata.synth.avmnist import generate
from mmdata.types import KEY_PATTERN

TRAIN, TEST = 600, 200
LAYOUT = {
    "image/train_data.npy": (np.float64, (TRAIN, 784)),
    "image/test_data.npy": (np.float64, (TEST, 784)),
    "audio/train_data.npy": (np.uint8, (TRAIN, 112, 112)),
    "audio/test_data.npy": (np.uint8, (TEST, 112, 112)),
    "train_labels.npy": (np.uint8, (TRAIN,)),
    "test_labels.npy": (np.uint8, (TEST,)),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-size mini written once for the read-only tests."""
    return generate(tmp_path_factory.mktemp("avmnist") / "avmnist", seed=0)


def _read(root: Path, split: str, **options: object) -> tuple[list[dict], list[Skip]]:
    """Samples and skips of one split."""
    items = list(avmnist.iter_samples(root, split, **options))
    return [i for i in items if not isinstance(i, Skip)], [i for i in items if isinstance(i, Skip)]


def _copy(root: Path, dest: Path) -> Path:
    """A writable copy of the six files (to corrupt)."""
    for name in LAYOUT:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes((root / name).read_bytes())
    return dest


def test_generate_writes_multibench_layout(root: Path) -> None:
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == set(LAYOUT)
    for name, (dtype, shape) in LAYOUT.items():
        array = np.load(root / name, allow_pickle=False)
        assert array.dtype == dtype and array.shape == shape, name
    labels = np.load(root / "train_labels.npy")
    assert set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).min() >= TRAIN // 10 - 1


def test_generate_is_deterministic(tmp_path: Path, root: Path) -> None:
    same = generate(tmp_path / "same", seed=0)
    other = generate(tmp_path / "other", seed=1)
    for name in LAYOUT:
        assert (same / name).read_bytes() == (root / name).read_bytes(), name
        assert (other / name).read_bytes() != (root / name).read_bytes(), name


def test_generate_rejects_tiny_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train >= 12"):
        generate(tmp_path, train=5)


def test_splits_counts_keys_and_schema(root: Path) -> None:
    read = {split: _read(root, split) for split in avmnist.CORPUS.splits}
    assert all(not skips for _, skips in read.values())
    counts = {split: len(samples) for split, (samples, _) in read.items()}
    assert counts == {"train": TRAIN - TRAIN // 12, "valid": TRAIN // 12, "test": TEST}
    keys = [s["__key__"] for samples, _ in read.values() for s in samples]
    assert len(set(keys)) == len(keys) and all(KEY_PATTERN.match(k) for k in keys)
    assert read["train"][0][0]["__key__"] == "avmnist/train/train00000"
    assert read["valid"][0][0]["__key__"] == f"avmnist/valid/train{TRAIN - TRAIN // 12:05d}"
    assert read["test"][0][-1]["__key__"] == f"avmnist/test/test{TEST - 1:05d}"
    for samples, _ in read.values():
        for sample in samples:
            check_sample(sample, avmnist.FEATURES)


def test_values_match_multibench_normalisation(root: Path) -> None:
    images = np.load(root / "image/test_data.npy")
    spectrograms = np.load(root / "audio/test_data.npy")
    labels = np.load(root / "test_labels.npy")
    samples, _ = _read(root, "test", mmap=False)
    for row in (0, 17, TEST - 1):
        expected = (images[row] / 255.0).astype(np.float32).reshape(28, 28)
        np.testing.assert_array_equal(samples[row]["image"], expected)
        np.testing.assert_array_equal(samples[row]["audio_spec"], spectrograms[row])
        assert samples[row]["label"] == labels[row]


def test_mmap_option_gives_the_same_samples(root: Path) -> None:
    mapped, _ = _read(root, "valid", mmap=True)
    loaded, _ = _read(root, "valid", mmap=False)
    assert [s["__key__"] for s in mapped] == [s["__key__"] for s in loaded]
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(mapped, loaded))


def test_corrupt_rows_become_skips(tmp_path: Path, root: Path) -> None:
    bad = _copy(root, tmp_path / "bad")
    images = np.load(bad / "image/train_data.npy")
    images[3, 100] = np.nan
    np.save(bad / "image/train_data.npy", images)
    labels = np.load(bad / "train_labels.npy")
    labels[7] = 11
    labels[TRAIN - 1] = 12  # a valid-split row
    np.save(bad / "train_labels.npy", labels)

    samples, skips = _read(bad, "train")
    assert [(s.key, s.reason) for s in skips] == [
        ("avmnist/train/train00003", "non_finite"), ("avmnist/train/train00007", "label_range")]
    assert skips[0].source.endswith("image/train_data.npy") and skips[1].source.endswith("train_labels.npy")
    assert len(samples) + len(skips) == TRAIN - TRAIN // 12
    valid, valid_skips = _read(bad, "valid")
    assert [s.reason for s in valid_skips] == ["label_range"]
    assert len(valid) + len(valid_skips) == TRAIN // 12


def test_float_spectrograms_are_kept_as_float32(tmp_path: Path, root: Path) -> None:
    """Float levels are a codec choice (float32), not a defect: only levels outside 0..255 are refused."""
    bad = _copy(root, tmp_path / "float")
    spectrograms = np.load(bad / "audio/test_data.npy").astype(np.float32)
    spectrograms[1, 0, 0] = 300.0
    spectrograms[2, 5, 5] = 0.5
    spectrograms[3, 7, 7] = np.nan
    np.save(bad / "audio/test_data.npy", spectrograms)
    features = avmnist.features(bad)
    assert features["audio_spec"].dtype == "float32" and "float32" in avmnist.describe(bad)
    samples, skips = _read(bad, "test")
    assert [(s.key, s.reason) for s in skips] == [
        ("avmnist/test/test00001", "value_range"), ("avmnist/test/test00003", "non_finite")]
    assert len(samples) == TEST - 2 and samples[1]["__key__"] == "avmnist/test/test00002"
    np.testing.assert_array_equal(samples[1]["audio_spec"], spectrograms[2])
    for sample in samples:
        check_sample(sample, features)
    train, _ = _read(bad, "train")  # the train array is still uint8: stored as float32 too, exactly
    assert train[0]["audio_spec"].dtype == np.float32 and avmnist.features(root) == avmnist.FEATURES


def test_fractional_spectrograms_shard_in_full(tmp_path: Path, root: Path) -> None:
    """MultiBench divides float spectrograms by 255 and trains on them; so every row shards, values as released."""
    import mmdata
    from mmdata.shards.build import shard_corpus

    fractional = _copy(root, tmp_path / "fractional")
    for split in ("train", "test"):
        levels = np.load(fractional / f"audio/{split}_data.npy").astype(np.float64)
        levels = np.clip(levels + np.random.default_rng(0).uniform(0.0, 1.0, levels.shape), 0.0, 255.0)
        np.save(fractional / f"audio/{split}_data.npy", levels)
    manifests = shard_corpus("avmnist", fractional, tmp_path / "shards", max_samples=100, progress=False)
    for split, manifest in manifests.items():
        report = manifest["report"]
        assert report["skipped"] == 0 and report["written"] == report["raw"] > 0, split
    batch = next(iter(mmdata.load(tmp_path / "shards", "test", batch_size=4, shuffle=False)))
    expected = np.load(fractional / "audio/test_data.npy")[:4].astype(np.float32)
    np.testing.assert_array_equal(batch["audio_spec"].numpy(), expected)


def test_row_count_mismatch_names_the_files(tmp_path: Path, root: Path) -> None:
    bad = _copy(root, tmp_path / "short")
    np.save(bad / "test_labels.npy", np.load(bad / "test_labels.npy")[:-1])
    with pytest.raises(BadInputError, match=r"test_labels\.npy: 199 rows"):
        list(avmnist.iter_samples(bad, "test"))


def test_configuration_errors(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        list(avmnist.iter_samples(tmp_path / "nowhere", "train"))
    partial = _copy(root, tmp_path / "partial")
    (partial / "audio/test_data.npy").unlink()
    with pytest.raises(ConfigError, match=r"audio/test_data\.npy"):
        list(avmnist.iter_samples(partial, "test"))
    with pytest.raises(ConfigError, match="unknown split"):
        list(avmnist.iter_samples(root, "dev"))
    with pytest.raises(ConfigError, match="use .*avmnist"):
        list(avmnist.iter_samples(root.parent, "train"))


def test_corpus_entry_points(root: Path) -> None:
    corpus = avmnist.CORPUS
    assert corpus.name == "avmnist" and corpus.options() == {"mmap"}
    assert corpus.features(root) == avmnist.FEATURES
    assert [p.relative_to(root).as_posix() for p in corpus.sources(root)] == [
        "image/train_data.npy", "audio/train_data.npy", "train_labels.npy",
        "image/test_data.npy", "audio/test_data.npy", "test_labels.npy"]
    assert corpus.describe(root).startswith(f"AV-MNIST, MultiBench layout: train {TRAIN} rows")


def _features(samples: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image pixels [n, 784], the time-averaged spectrum in 28 bands [n, 28], and labels [n]."""
    image = np.stack([s["image"].ravel() for s in samples])
    spectrum = np.stack([s["audio_spec"].mean(axis=1) for s in samples]).reshape(len(samples), 28, 4).mean(2)
    return image, spectrum, np.array([s["label"] for s in samples])


def _nearest_mean_accuracy(train: list[np.ndarray], y: np.ndarray, test: list[np.ndarray], y_test: np.ndarray) -> float:
    """Nearest-class-mean accuracy on concatenated blocks, each z-scored and scaled to equal total variance."""
    def scale(block: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (block - ref.mean(0)) / (ref.std(0) + 1e-6) / np.sqrt(ref.shape[1])

    x = np.hstack([scale(b, b) for b in train])
    x_test = np.hstack([scale(t, b) for t, b in zip(test, train)])
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    predicted = ((x_test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return float((predicted == y_test).mean())


def test_signal_needs_both_modalities(root: Path) -> None:
    image, audio, y = _features(_read(root, "train")[0] + _read(root, "valid")[0])
    image_test, audio_test, y_test = _features(_read(root, "test")[0])
    image_only = _nearest_mean_accuracy([image], y, [image_test], y_test)
    audio_only = _nearest_mean_accuracy([audio], y, [audio_test], y_test)
    fused = _nearest_mean_accuracy([image, audio], y, [image_test, audio_test], y_test)
    assert image_only < 0.6 and audio_only < 0.4
    assert fused > image_only + 0.2 and fused > 0.7
