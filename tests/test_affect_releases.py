"""CMU-MOSI/MOSEI releases: the four formats of one mini shard to the same samples; SDK alignment and faults."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import mmdata
from mmdata.corpora import mosi
from mmdata.corpora.affect import sdk_files
from mmdata.corpora.base import REPAIRS, Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.shards.build import shard_corpus
from mmdata.synth.mosi import COVAREP_SUBSET, FACET41_SUBSET, generate
from mmdata.types import KEY_PATTERN

RELEASES = ("mmsa", "mult", "multibench", "sdk")
SIZES = {"train": 30, "valid": 10, "test": 15}
SDK_DIR = "cmumosi"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MOSI mini written in all four releases from the same clips."""
    return generate(tmp_path_factory.mktemp("mosi4"), seed=1, **SIZES, releases=RELEASES)


def read(root: Path | str, split: str, **options) -> tuple[list[dict], list[Skip]]:
    items = list(mosi.iter_samples(root, split, **options))
    return [s for s in items if isinstance(s, dict)], [s for s in items if isinstance(s, Skip)]


def shard_rows(root: Path, out: Path, split: str, **reader) -> list[dict]:
    """Shard the release, then every sample of ``split`` read back from the shards, in key order."""
    shard_corpus("mosi", root, out, reader=reader, max_samples=8, progress=False)
    loader = mmdata.load(out, split, batch_size=1, shuffle=False)
    rows = [{k: (v[0].numpy() if hasattr(v, "numpy") else v[0]) for k, v in batch.items()} for batch in loader]
    return sorted(rows, key=lambda r: r["__key__"])


def test_each_release_is_detected_and_named(root):
    names = {"mmsa": "MMSA", "mult": "MulT", "multibench": "MultiBench", "sdk": "CMU-MultimodalSDK"}
    for release, name in names.items():
        assert name in mosi.describe(root, release=release)
    assert "MMSA" in mosi.describe(root)  # auto: MMSA first
    assert "aligned_50.pkl" in mosi.describe(root)


def test_auto_finds_the_only_release_present(root, tmp_path):
    only_sdk = tmp_path / "sdk"
    shutil.copytree(root / SDK_DIR, only_sdk / SDK_DIR)
    text = mosi.describe(only_sdk)
    assert "CMU-MultimodalSDK" in text and "cmu_mosi_std_folds.py" in text and "6 train" not in text
    assert mosi.describe(only_sdk / SDK_DIR).startswith("CMU-MOSI, CMU-MultimodalSDK")
    only_mb = tmp_path / "mb"
    only_mb.mkdir()
    shutil.copy(root / "mosi_raw.pkl", only_mb / "renamed.pkl")  # family from the content, not the name
    assert "ids 'video[k]'" in mosi.describe(only_mb / "renamed.pkl")
    with pytest.raises(ConfigError, match="word-aligned only; set variant: aligned"):
        mosi.features(root, release="multibench", variant="unaligned")
    with pytest.raises(ConfigError, match="holds the multibench release, not mult; set release: multibench"):
        mosi.features(only_mb / "renamed.pkl", release="mult")
    with pytest.raises(ConfigError, match="holds the sdk release, not mmsa"):
        mosi.features(only_sdk / SDK_DIR / "CMU_MOSI_COVAREP.csd", release="mmsa")


def test_four_formats_shard_to_the_same_samples(root, tmp_path):
    rows = {r: shard_rows(root, tmp_path / r, "test", release=r) for r in RELEASES}
    rows["sdk41"] = shard_rows(root, tmp_path / "sdk41", "test", release="sdk", sdk_vision="facet41")
    keys = {r: [row["__key__"] for row in v] for r, v in rows.items()}
    assert len(keys["mmsa"]) == SIZES["test"] and all(k == keys["mmsa"] for k in keys.values())
    for r in RELEASES:
        np.testing.assert_array_equal([x["label"] for x in rows[r]], [x["label"] for x in rows["mmsa"]])

    def same(a: str, b: str, field: str, columns: tuple[int, ...] | None = None) -> None:
        for x, y in zip(rows[a], rows[b]):
            other = y[field][:, list(columns)] if columns else y[field]
            np.testing.assert_array_equal(x[field], other, err_msg=f"{a} vs {b} {field} {x['__key__']}")

    same("mmsa", "mult", "feat_audio")  # COVAREP subset [50, 5]
    same("mmsa", "mult", "feat_vision")  # FACET 4.1 subset [50, 20]
    same("mult", "sdk", "feat_audio", COVAREP_SUBSET)  # the subset is SDK COVAREP's columns, word-aligned
    same("mult", "sdk41", "feat_vision", FACET41_SUBSET)
    for field in ("feat_text", "feat_audio", "feat_vision"):  # GloVe 300, COVAREP 74, FACET 4.2 35
        same("multibench", "sdk", field)
    same("mult", "multibench", "feat_text")
    assert [x["text"] for x in rows["mmsa"]] == [x["text"] for x in rows["sdk"]]  # transcript == SDK words


def test_unaligned_sdk_holds_the_mmsa_frames(root):
    for split in SIZES:
        a, _ = read(root, split, release="mmsa", variant="unaligned")
        b, skips = read(root, split, release="sdk", variant="unaligned", sdk_vision="facet41")
        assert not skips and [s["__key__"] for s in a] == [s["__key__"] for s in b]
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x["feat_audio"], y["feat_audio"][:, list(COVAREP_SUBSET)])
            np.testing.assert_array_equal(x["feat_vision"], y["feat_vision"][:, list(FACET41_SUBSET)])
            assert len(y["feat_text"]) == len(x["text"].split())  # one step per word
    features = mosi.features(root, release="sdk", variant="unaligned")
    assert features["feat_audio"].shape == (None, 74) and features["feat_text"].shape == (None, 300)


def test_every_release_passes_the_schema_and_repairs_neg_inf(root):
    for release in RELEASES:
        features = mosi.features(root, release=release)
        for split, n in SIZES.items():
            samples, skips = read(root, split, release=release)
            assert len(samples) == n and not skips
            keys = [s["__key__"] for s in samples]
            assert len(set(keys)) == n and all(KEY_PATTERN.match(k) for k in keys)
            for sample in samples:
                check_sample({k: v for k, v in sample.items() if k != REPAIRS}, features)
            assert any(REPAIRS in s for s in samples) or split != "train"
            assert all(s.get(REPAIRS, ("neg_inf_to_zero",)) == ("neg_inf_to_zero",) for s in samples)


def test_synth_writes_the_sdk_csd_layout(root):
    folder = root / SDK_DIR
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["CMU_MOSI_COVAREP.csd", "CMU_MOSI_Opinion_Labels.csd", "CMU_MOSI_TimestampedWordVectors.csd",
                     "CMU_MOSI_TimestampedWords.csd", "CMU_MOSI_Visual_Facet_41.csd", "CMU_MOSI_Visual_Facet_42.csd",
                     "cmu_mosi_std_folds.py"]
    with h5py.File(folder / "CMU_MOSI_COVAREP.csd", "r") as f:
        assert list(f) == ["COVAREP"] and set(f["COVAREP"]) == {"data", "metadata"}
        video = next(iter(f["COVAREP/data"]))
        feats, spans = f[f"COVAREP/data/{video}/features"], f[f"COVAREP/data/{video}/intervals"]
        assert feats.shape[1] == 74 and spans.shape == (feats.shape[0], 2)
        assert (np.diff(spans[:, 0]) > 0).all()
        meta = f["COVAREP/metadata"]
        assert "dimension names" in meta and json.loads(meta["root name"][0]) == "COVAREP"
        assert h5py.check_string_dtype(meta["dataset name"].dtype) is not None
    with h5py.File(folder / "CMU_MOSI_Opinion_Labels.csd", "r") as f:
        rows = f[f"Opinion Segment Labels/data/{video}/features"]
        assert rows.shape[1] == 1 and np.abs(rows[()]).max() <= 3
    folds = sdk_files.read_folds(folder / "cmu_mosi_std_folds.py", "CMU-MOSI")
    assert [len(set(v)) for v in folds.values()] == [len(v) for v in folds.values()]


def test_multibench_layout_and_seven_value_labels(root, tmp_path):
    with open(root / "mosi_raw.pkl", "rb") as f:
        data = pickle.load(f)
    train = data["train"]
    assert list(train) == ["vision", "audio", "text", "labels", "id"]
    assert train["vision"].shape == (30, 50, 35) and train["audio"].shape == (30, 50, 74)
    assert train["text"].shape == (30, 50, 300) and train["labels"].shape == (30, 1, 1)
    assert all(i.endswith("]") and "[" in i for i in train["id"])
    assert np.isneginf(train["audio"]).any()
    for split in data.values():  # MultiBench's loader accepts [sentiment, 6 emotions] label rows
        n = len(split["labels"])
        split["labels"] = np.concatenate([split["labels"], np.full((n, 1, 6), 1.0, np.float32)], axis=2)
    with open(tmp_path / "mosi_raw.pkl", "wb") as f:
        pickle.dump(data, f)
    assert mosi.features(tmp_path)["meta_emotions"].shape == (6,)
    samples, _ = read(tmp_path, "valid")
    assert all(np.array_equal(s["meta_emotions"], np.ones(6, np.float32)) for s in samples)


def test_truncated_pickle_and_foreign_file(root, tmp_path):
    (tmp_path / "mosi_data.pkl").write_bytes(b"\x00" * 64)  # MMSA#98: "invalid load key '\x00'"
    with pytest.raises(ConfigError, match="not a readable pickle.*re-download"):
        mosi.features(tmp_path)
    (tmp_path / "mosi_data.pkl").unlink()
    (tmp_path / "x.csd").write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="unreadable HDF5"):
        mosi.features(tmp_path)


# --- the SDK alignment rule and faults, on hand-written .csd files ---


def write_csd(path: Path, root: str, videos: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    with h5py.File(path, "w") as f:
        for video, (features, intervals) in videos.items():
            f.create_dataset(f"{root}/data/{video}/features", data=features)
            f.create_dataset(f"{root}/data/{video}/intervals", data=intervals)
        f.create_dataset(f"{root}/metadata/root name", data=[json.dumps(root)], dtype=h5py.string_dtype())


def tiles(start: float, end: float, n: int) -> np.ndarray:
    edges = np.linspace(start, end, n + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


@pytest.fixture
def handmade(tmp_path: Path) -> Path:
    """Videos v1 (two segments), v2 (no COVAREP), v3 (labels only, in no fold); folds as JSON."""
    words = {"v1": (np.arange(1, 5, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                    np.array([[0, 1], [1, 2], [3, 3.5], [3.5, 4]], float)),
             "v2": (np.ones((1, 3), np.float32), np.array([[0, 1]], float))}
    audio = np.array([[10, 0], [20, 0], [30, 0], [-np.inf, 0], [40, 0]], np.float32)
    # Frame 0 ends exactly where word 2 starts (touching, not overlapping); frame 4 lies in the gap.
    audio_spans = np.array([[0, 1], [1, 1.5], [1.5, 2], [3, 4], [2.2, 2.8]], float)
    write_csd(tmp_path / "glove.csd", "glove_vectors", words)
    write_csd(tmp_path / "COVAREP.csd", "COVAREP", {"v1": (audio, audio_spans)})
    write_csd(tmp_path / "FACET_4.2.csd", "FACET 4.2", {v: (np.ones((2, 2), np.float32), tiles(0, 4, 2))
                                                        for v in ("v1", "v2")})
    labels = {"v1": (np.array([[1.5], [-0.4], [0.2]], np.float32), np.array([[0, 2], [3, 4], [5, 5]], float)),
              "v2": (np.array([[0.0]], np.float32), np.array([[0, 1]], float)),
              "v3": (np.array([[0.0]], np.float32), np.array([[0, 1]], float))}
    write_csd(tmp_path / "Labels.csd", "Opinion Segment Labels", labels)
    (tmp_path / "folds.json").write_text(json.dumps({"train": ["v1", "v2", "v4"], "valid": [], "test": []}))
    return tmp_path


def test_sdk_alignment_rule_and_named_skips(handmade):
    samples, skips = read(handmade, "train", release="sdk")
    assert [s["__key__"] for s in samples] == ["mosi/train/v1_1", "mosi/train/v1_2"]
    first, second = samples
    steps = first["feat_audio"][-2:, 0]  # word [0, 1] <- frame 0 only; word [1, 2] <- frames 1 and 2
    np.testing.assert_array_equal(steps, [10.0, 25.0])
    assert (first["feat_audio"][:-2] == 0).all() and first["feat_text"].shape == (50, 3)
    np.testing.assert_array_equal(second["feat_audio"][-2:, 0], [0.0, 0.0])  # the -inf frame, repaired to 0
    assert second[REPAIRS] == ("neg_inf_to_zero",) and REPAIRS not in first
    assert float(first["label"]) == 1.5 and float(second["label"]) == pytest.approx(-0.4)
    reasons = {s.key: s.reason for s in skips}
    assert reasons == {"mosi/train/v1_3": "empty_segment", "mosi/train/v2_1": "missing_feat_audio",
                       "mosi/train/v4": "missing_labels"}
    assert "1 labelled videos in no fold" in mosi.describe(handmade, release="sdk")


def test_sdk_imputes_truncates_and_checks_labels(handmade):
    words = np.ones((60, 3), np.float32) * np.arange(1, 61, dtype=np.float32)[:, None]
    write_csd(handmade / "glove.csd", "glove_vectors", {"v1": (words, tiles(0, 6, 60)),
                                                         "v2": (np.ones((1, 3), np.float32), np.array([[0, 1.0]]))})
    audio = np.array([[1, 1], [np.nan, 0]], np.float32)
    write_csd(handmade / "COVAREP.csd", "COVAREP", {"v1": (audio[:1], np.array([[0, 0.5]])),
                                                     "v2": (audio[1:], np.array([[0, 1.0]]))})
    labels = {"v1": (np.array([[2.0]], np.float32), np.array([[0, 6.0]])),
              "v2": (np.array([[4.0]], np.float32), np.array([[0, 1.0]]))}
    write_csd(handmade / "Labels.csd", "Opinion Segment Labels", labels)
    samples, skips = read(handmade, "train", release="sdk")
    (sample,) = samples
    assert sample[REPAIRS] == ("impute_zero", "truncated_to_50")
    np.testing.assert_array_equal(sample["feat_text"][:, 0], np.arange(11, 61))  # the last 50 words
    assert not sample["feat_audio"].any()  # the one frame covers words 1-5, which truncation dropped
    assert [s.reason for s in skips] == ["label_range", "missing_labels"]


def test_sdk_folds_options_and_errors(handmade, tmp_path):
    (handmade / "folds.json").unlink()
    with pytest.raises(ConfigError, match="no folds file.*cmu_mosi_std_folds.py"):
        mosi.features(handmade, release="sdk")
    module = tmp_path / "my_folds.py"
    module.write_text("standard_train_fold = ['v1']\nstandard_valid_fold = ['v2']\nstandard_test_fold = []\n")
    samples, _ = read(handmade, "valid", release="sdk", folds=str(module))
    assert samples == [] and str(module) in mosi.describe(handmade, release="sdk", folds=str(module))
    module.write_text("standard_train_fold = ['v1']\nstandard_valid_fold = ['v1']\nstandard_test_fold = []\n")
    with pytest.raises(ConfigError, match="v1 is in train and valid"):
        mosi.features(handmade, release="sdk", folds=str(module))
    with pytest.raises(ConfigError, match="folds file .* does not exist"):
        mosi.features(handmade, release="sdk", folds=str(tmp_path / "nope.py"))
    shutil.copy(handmade / "COVAREP.csd", handmade / "COVAREP_copy.csd")
    with pytest.raises(ConfigError, match="look like the audio sequence"):
        mosi.features(handmade, release="sdk", folds=str(module))
    (handmade / "COVAREP_copy.csd").unlink()
    with pytest.raises(ConfigError, match=r"no facet41 sequence.*\['facet42'\]"):
        mosi.features(handmade, release="sdk", sdk_vision="facet41")
