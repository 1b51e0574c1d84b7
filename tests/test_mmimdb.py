"""MM-IMDb: the mini's archive layout and signal, the reader's genres, plots and skips, multi-label shards,
the multilabel model head and metrics."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier

import mmdata
from methods import late_fusion
from mmdata.corpora import get_corpus, mmimdb
from mmdata.corpora.base import REPAIRS, Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.metrics import METRICS, multilabel_metrics
from mmdata.rng import make_rng
from mmdata.samplers.label_fraction import label_fraction
from mmdata.shards.build import shard_corpus
from mmdata.shards.index import read_index
from mmdata.synth import SYNTHS
from mmdata.synth.mmimdb import generate

SIZES = {"train": 40, "valid": 10, "test": 20}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("mmimdb"), seed=0, **SIZES)


def read(root: Path, split: str, **options) -> tuple[list[dict], list[Skip]]:
    items = list(mmimdb.iter_samples(root, split, **options))
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, Skip)]


def movie(root: Path, movie_id: str) -> dict:
    return json.loads((root / "mmimdb" / "dataset" / f"{movie_id}.json").read_text())


def test_registered():
    assert get_corpus("mmimdb") is mmimdb.CORPUS and SYNTHS["mmimdb"] is generate
    assert mmimdb.CORPUS.options() == {"plot", "image_size"} and mmimdb.CORPUS.task == "multilabel"
    assert mmimdb.CORPUS.splits == ("train", "valid", "test") and "multilabel" in METRICS


def test_archive_layout(root):
    split = json.loads((root / "mmimdb" / "split.json").read_text())
    assert list(split) == ["train", "dev", "test"] and [len(v) for v in split.values()] == list(SIZES.values())
    ids = [i for v in split.values() for i in v]
    files = sorted(p.name for p in (root / "mmimdb" / "dataset").iterdir())
    assert files == sorted(f"{i}.{ext}" for i in ids for ext in ("jpeg", "json"))
    for movie_id in ids:
        assert len(movie_id) == 7 and movie_id.isdigit()
        data = movie(root, movie_id)
        assert isinstance(data["plot"], list) and all(isinstance(p, str) and p for p in data["plot"])
        assert set(data["genres"]) <= set(mmimdb.GENRES) | set(mmimdb.RARE_GENRES)
        assert {"title", "year", "kind", "cover url", "votes"} <= set(data)
        poster = (root / "mmimdb" / "dataset" / f"{movie_id}.jpeg").read_bytes()
        assert poster[:3] == b"\xff\xd8\xff"


def test_generate_is_deterministic(tmp_path, root):
    def digest(folder: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()

    assert digest(generate(tmp_path / "a", seed=0, **SIZES)) == digest(root)
    assert digest(generate(tmp_path / "b", seed=1, **SIZES)) != digest(root)


def test_plots_carry_only_the_odd_ranked_genres(tmp_path):
    root = generate(tmp_path / "big", seed=4, train=400, valid=1, test=200)
    split = json.loads((root / "mmimdb" / "split.json").read_text())

    def xy(key: str) -> tuple[list[str], np.ndarray]:
        texts, labels = [], []
        for movie_id in split[key]:
            data = movie(root, movie_id)
            texts.append(max(data["plot"], key=len))
            labels.append([g in data["genres"] for g in mmimdb.GENRES])
        return texts, np.array(labels, dtype=int)

    (train_x, train_y), (test_x, test_y) = xy("train"), xy("test")
    vectorizer = CountVectorizer().fit(train_x)
    model = OneVsRestClassifier(LogisticRegression(C=10, max_iter=2000))
    pred = model.fit(vectorizer.transform(train_x), train_y).predict(vectorizer.transform(test_x))
    odd = np.arange(len(mmimdb.GENRES)) % 2 == 1
    assert f1_score(test_y[:, odd], pred[:, odd], average="micro") > 0.8  # the plot names these genres
    assert f1_score(test_y[:, ~odd], pred[:, ~odd], average="micro") < 0.45  # and not these (poster only)


def test_reader_samples_labels_and_keys(root):
    features = mmimdb.features(root)
    assert features["label"].shape == (23,) and features["label"].classes == mmimdb.GENRES
    split = json.loads((root / "mmimdb" / "split.json").read_text())
    for ours, theirs in (("train", "train"), ("valid", "dev"), ("test", "test")):
        samples, skips = read(root, ours)
        assert not skips and [s["__key__"] for s in samples] == [f"mmimdb/{ours}/{i}" for i in split[theirs]]
        for sample in samples:
            check_sample({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}, features)
            data = movie(root, sample["__key__"].rsplit("/", 1)[1])
            assert [g for g, hot in zip(mmimdb.GENRES, sample["label"]) if hot] == \
                [g for g in mmimdb.GENRES if g in data["genres"]]
            rare = sorted(g for g in data["genres"] if g in mmimdb.RARE_GENRES)
            assert sorted(r.split(":")[1] for r in sample[REPAIRS] if r.startswith("dropped_genre")) == rare
            assert sample["text_plot"] == max(data["plot"], key=len) and sample["image"].shape == (64, 64, 3)


def test_plot_choice_and_kept_poster_bytes(root):
    samples = read(root, "train", plot="first", image_size=None)[0]
    for sample in samples:
        movie_id = sample["__key__"].rsplit("/", 1)[1]
        assert sample["text_plot"] == movie(root, movie_id)["plot"][0]
        assert sample["image"] == (root / "mmimdb" / "dataset" / f"{movie_id}.jpeg").read_bytes()
    longest = read(root, "train")[0]
    assert any(a["text_plot"] != b["text_plot"] for a, b in zip(samples, longest)), "first is never shorter"
    assert mmimdb.features(root / "mmimdb", image_size=None)["image"].shape == (None, None, 3)
    with pytest.raises(ConfigError, match="plot"):
        list(mmimdb.iter_samples(root, "train", plot="shortest"))


def _corrupt(root: Path, dest: Path) -> dict[str, int]:
    """A copy with one fault of each kind among the train movies; returns the expected skip reasons."""
    copy = shutil.copytree(root, dest)
    base = copy / "mmimdb"
    split = json.loads((base / "split.json").read_text())
    ids = split["train"]
    poster, meta = (lambda i: base / "dataset" / f"{ids[i]}.jpeg"), (lambda i: base / "dataset" / f"{ids[i]}.json")
    poster(0).write_bytes(poster(0).read_bytes()[:poster(0).stat().st_size // 2])
    poster(1).write_bytes(b"<!DOCTYPE html><html></html>")
    poster(2).unlink()
    meta(3).unlink()
    meta(4).write_bytes(meta(4).read_bytes().replace(b'"title": "', b'"title": "\xe9'))
    meta(5).write_text('{"plot": ["cut')
    for i, change in ((6, {"plot": None}), (7, {"genres": None}), (8, {"plot": ["", "  "]}),
                      (9, {"genres": ["Drama", "Telenovela"]}), (10, {"genres": ["News"]})):
        data = json.loads(meta(i).read_text())
        data.update(change)
        meta(i).write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    split["train"] = ids + [ids[11]]  # listed twice
    split["test"] = split["test"] + [ids[12]]  # also listed in test: a leak, skipped there
    for ext in ("json", "jpeg"):  # a file named with 8 digits, listed with 7: found by its padding
        (base / "dataset" / f"{split['dev'][0]}.{ext}").rename(base / "dataset" / f"0{split['dev'][0]}.{ext}")
    (base / "split.json").write_text(json.dumps(split))
    return {"decode_error": 1, "unidentified_image": 1, "missing_image": 1, "missing_json": 1, "encoding": 1,
            "bad_json": 1, "missing_key": 2, "empty_text": 1, "no_standard_genre": 1, "duplicate_id": 1}


@pytest.mark.parametrize("image_size", [64, None])
def test_bad_input_is_skipped_by_name_and_counts_reconcile(root, tmp_path, image_size):
    expected = _corrupt(root, tmp_path / "bad")
    manifests = shard_corpus("mmimdb", tmp_path / "bad", tmp_path / "out", max_skip_fraction=0.5,
                             reader={"image_size": image_size}, progress=False)
    report = manifests["train"]["report"]
    assert report["skipped_by_reason"] == expected
    # A genre no loader knows is dropped and counted; the movie (with its Drama label) is written.
    assert report["repairs"]["unknown_genre:Telenovela"] == 1
    assert report["raw"] == 41 == report["written"] + report["skipped"]
    assert manifests["test"]["report"]["skipped_by_reason"] == {"duplicate_id": 1}
    assert manifests["valid"]["report"]["raw"] == 10 and manifests["valid"]["report"]["skipped"] == 0
    assert all(s["source"] and s["detail"] for s in report["skips"])


def test_shards_hold_multi_hot_labels_for_loaders_and_samplers(root, tmp_path):
    manifest = shard_corpus("mmimdb", root, tmp_path / "out", max_samples=16, progress=False)["train"]
    samples = read(root, "train")[0]
    counts = np.sum([s["label"] for s in samples], axis=0).astype(int)
    assert manifest["class_counts"] == dict(zip(mmimdb.GENRES, counts.tolist()))
    index = read_index(tmp_path / "out" / "train" / "index.parquet")
    assert len(index["label"]) == 40 and list(index["label"][0]) == samples[0]["label"].tolist()
    subsets = label_fraction(index, make_rng(0, "label_fraction"), fractions=[0.25, 0.5])
    assert len(subsets[0.25]) == 10 and set(subsets[0.25]) <= set(subsets[0.5])
    batch = next(iter(mmdata.load(tmp_path / "out", "train", batch_size=8, shuffle=False)))
    assert batch["label"].shape == (8, 23) and batch["label"].dtype == torch.float32
    assert batch["image"].shape == (8, 64, 64, 3) and len(batch["text_plot"]) == 8


def test_late_fusion_multilabel_head(root, tmp_path):
    shard_corpus("mmimdb", root, tmp_path / "out", progress=False)
    loader = mmdata.load(tmp_path / "out", "train", batch_size=8, shuffle=False)
    model = late_fusion.build_model(loader.shards.features, fields=["image", "text_plot"], dim=8, hidden=16,
                                    text_ngrams=1)
    assert model.task == "multilabel"
    batch = next(iter(loader))
    step = late_fusion.training_step(model, batch)
    assert step["loss"].dim() == 0 and step["pred"].shape == (8, 23)
    prob = late_fusion.predict(model, batch)
    assert prob.shape == (8, 23) and ((prob >= 0) & (prob <= 1)).all()


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    scores, truth = rng.random((60, 23)), (rng.random((60, 23)) < 0.2).astype(np.float32)
    m = multilabel_metrics(scores, truth)
    pred = (scores > 0.5).astype(int)
    assert m["f1_micro"] == pytest.approx(f1_score(truth, pred, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert multilabel_metrics(truth, truth) == {"f1_micro": 1.0, "f1_macro": pytest.approx(1.0)}
    assert multilabel_metrics(np.full((2, 3), 0.5), np.ones((2, 3)))["f1_micro"] == 0.0  # 0.5 is negative
    with pytest.raises(ValueError):
        multilabel_metrics(scores, truth[:, :5])


def test_missing_root_and_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        mmimdb.sources(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="split.json"):
        list(mmimdb.iter_samples(tmp_path, "train"))
    (tmp_path / "dataset").mkdir()
    (tmp_path / "split.json").write_text('{"train": []}')
    with pytest.raises(ConfigError, match="'dev'"):
        mmimdb.describe(tmp_path)


def _found_or_error(find, movie: str, ext: str):
    try:
        return find(movie, ext)
    except Exception as exc:  # noqa: BLE001 - the error type and reason are what is compared
        return type(exc), getattr(exc, "reason", None)


def test_the_split_list_finder_finds_what_find_finds(tmp_path):
    """The one-lstat finder the split list and parts use gives _find's path or error for every kind of id: a
    listed file, an unpadded id of a padded file, a missing one, a folder, symlinks inside and out of the
    release, a symlinked dataset folder leading out, a climbing, absolute, NUL or non-ASCII-digit id."""
    release = tmp_path / "mmimdb"
    dataset = release / "dataset"
    dataset.mkdir(parents=True)
    (tmp_path / "outside.json").write_text("{}")
    for name in ("0012345.json", "inside.json", "7654321.json"):
        (dataset / name).write_text("{}")
    (dataset / "dir.json").mkdir()
    (dataset / "0099999.json").mkdir()
    (dataset / "link-in.json").symlink_to(dataset / "inside.json")
    (dataset / "link-out.json").symlink_to(tmp_path / "outside.json")
    (dataset / "0077777.json").symlink_to(tmp_path / "outside.json")
    ids = ["0012345", "12345", "7654321", "inside", "missing", "424242", "dir", "99999", "link-in", "link-out",
           "77777", "../outside", "/etc/passwd", "a\0b", "..", ".", "", "²"]
    for root in (dataset, release / "dataset-link"):
        if root.name == "dataset-link":  # a dataset folder that is a symlink out of the release
            root.symlink_to(tmp_path)
        find = mmimdb._finder(root)
        for movie in ids:
            assert _found_or_error(find, movie, "json") == \
                _found_or_error(lambda m, e: mmimdb._find(root, m, e), movie, "json"), (root.name, movie)
