"""Hateful Memes: the mini's Phase-1/2 layouts and confounders, the reader's splits, unlabeled memes and skips."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmdata.corpora import get_corpus, hateful_memes
from mmdata.corpora.base import Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.metrics import classification_metrics
from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS
from mmdata.synth.hateful_memes import TOPICS, generate
from mmdata.types import KEY_PATTERN, UNLABELED

SIZES = {"train": 60, "valid": 18, "test": 30, "unseen": 15}
PHASE2 = {"train": 60, "dev_seen": 18, "dev_unseen": 15, "test_seen": 30, "test_unseen": 15}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("hm") / "hm", seed=0, **SIZES)


@pytest.fixture(scope="module")
def root1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("hm1") / "hm", seed=0, phase=1, **SIZES)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read(root: Path, split: str, **options) -> tuple[list[dict], list[Skip]]:
    items = list(hateful_memes.iter_samples(root, split, **options))
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, Skip)]


def test_registered():
    assert get_corpus("hateful_memes") is hateful_memes.CORPUS and SYNTHS["hateful_memes"] is generate
    assert hateful_memes.CORPUS.options() == {"phase", "image_size"}
    assert hateful_memes.CORPUS.splits == ("train", "valid", "test", "unlabeled")
    assert hateful_memes.CORPUS.task == "classification"


def test_phase2_layout(root):
    assert sorted(p.name for p in root.glob("*.jsonl")) == sorted(f"{s}.jsonl" for s in PHASE2)
    ids = []
    for stem, n in PHASE2.items():
        records = lines(root / f"{stem}.jsonl")
        assert len(records) == n
        for r in records:
            assert list(r) == (["id", "img", "text"] if stem == "test_unseen" else ["id", "img", "label", "text"])
            assert isinstance(r["id"], int) and r["img"] == f"img/{r['id']:05d}.png"
            assert (root / r["img"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert r.get("label", 0) in (0, 1)
        ids += [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == len(list((root / "img").glob("*.png")))
    assert any(i < 10000 for i in ids), "no id needing zero padding"


def test_phase1_layout(root1):
    assert sorted(p.name for p in root1.glob("*.jsonl")) == ["dev.jsonl", "test.jsonl", "train.jsonl"]
    assert all("label" not in r for r in lines(root1 / "test.jsonl"))
    assert all("label" in r for r in lines(root1 / "dev.jsonl"))


def test_generate_is_deterministic(tmp_path, root):
    def digest(folder: Path) -> dict[str, str]:
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    assert digest(generate(tmp_path / "a", seed=0, **SIZES)) == digest(root)
    assert digest(generate(tmp_path / "b", seed=1, **SIZES)) != digest(root)


def _topic(text: str) -> int:
    words = set(text.split())
    (topic,) = [t for t, vocab in enumerate(TOPICS) if words & set(vocab)]
    return topic


def test_benign_confounders_leave_each_modality_at_chance(tmp_path):
    root = generate(tmp_path / "big", seed=3, train=600, valid=3, test=3, unseen=3)
    records = lines(root / "train.jsonl")
    by_text, by_pixels = defaultdict(set), defaultdict(set)
    for r in records:
        by_text[r["text"]].add(r["label"])
        by_pixels[hashlib.sha256((root / r["img"]).read_bytes()).hexdigest()].add(r["label"])
    # The same caption on another picture, or the same picture with another caption, flips the label.
    assert all(labels == {0, 1} for labels in by_text.values() if len(labels) > 1)
    shared_text = [t for t, labels in by_text.items() if len(labels) > 1]
    shared_pixels = [p for p, labels in by_pixels.items() if len(labels) > 1]
    assert len(shared_text) > 150 and len(shared_pixels) > 150
    assert all(len(labels) == 2 for labels in by_pixels.values() if len(labels) > 1)
    # Every caption topic is hateful about half the time, so the caption alone is at chance.
    rates = defaultdict(list)
    for r in records:
        rates[_topic(r["text"])].append(r["label"])
    assert all(0.35 < np.mean(v) < 0.65 for v in rates.values()) and len(rates) == 4


def test_reader_phase2_splits_keys_and_samples(root):
    features = hateful_memes.features(root)
    assert features["image"].shape == (64, 64, 3) and features["label"].unlabeled == UNLABELED
    expect = {"train": 60, "valid": 18, "test": 30, "unlabeled": 15}
    ids = {stem: {f"{r['id']:05d}" for r in lines(root / f"{stem}.jsonl")} for stem in PHASE2}
    files = {"train": "train", "valid": "dev_seen", "test": "test_seen", "unlabeled": "test_unseen"}
    for split, n in expect.items():
        samples, skips = read(root, split)
        assert len(samples) == n and not skips
        assert {s["__key__"].rsplit("/", 1)[1] for s in samples} == ids[files[split]]
        for s in samples:
            assert KEY_PATTERN.match(s["__key__"]) and s["__key__"].startswith(f"hateful_memes/{split}/")
            check_sample({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}, features)
        labels = {s["label"] for s in samples}
        assert labels == {UNLABELED} if split == "unlabeled" else labels == {0, 1}


def test_reader_keeps_png_bytes_without_image_size(root):
    samples, _ = read(root, "valid", image_size=None)
    record = lines(root / "dev_seen.jsonl")[0]
    first = next(s for s in samples if s["__key__"].endswith(f"{record['id']:05d}"))
    assert first["image"] == (root / record["img"]).read_bytes()
    assert hateful_memes.features(root, image_size=None)["image"].codec == "png"


def test_reader_phase1_cuts_valid_from_train(root1):
    train, valid = read(root1, "train")[0], read(root1, "valid")[0]
    assert len(valid) == 60 // 17 and len(train) == 60 - 60 // 17
    train_ids = [f"{r['id']:05d}" for r in lines(root1 / "train.jsonl")]
    assert [s["__key__"].rsplit("/", 1)[1] for s in valid] == train_ids[-len(valid):]
    assert len(read(root1, "test")[0]) == 18 and {s["label"] for s in read(root1, "unlabeled")[0]} == {UNLABELED}
    assert "Phase-1" in hateful_memes.describe(root1)
    with pytest.raises(ConfigError, match="Phase-2"):
        list(hateful_memes.iter_samples(root1, "train", phase=2))


def test_test_lines_without_labels_go_to_unlabeled(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "copy")
    records = lines(copy / "test_seen.jsonl")
    del records[0]["label"], records[1]["label"]
    (copy / "test_seen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert len(read(copy, "test")[0]) == 28
    unlabeled = read(copy, "unlabeled")[0]
    assert len(unlabeled) == 17 and {s["label"] for s in unlabeled} == {UNLABELED}


def _corrupt(root: Path, dest: Path) -> dict[str, int]:
    """A copy of the mini with one fault of each kind in train.jsonl; returns the expected skip reasons."""
    copy = shutil.copytree(root, dest)
    path = copy / "train.jsonl"
    raw = path.read_bytes().splitlines()
    records = [json.loads(line) for line in raw]
    image = lambda i: copy / records[i]["img"]
    image(0).write_bytes(image(0).read_bytes()[:image(0).stat().st_size // 2])  # truncated PNG
    image(1).write_bytes(b"<html>not found</html>")  # not an image at all
    image(2).unlink()  # missing file
    image(3).write_bytes(b"")  # zero bytes
    records[4]["text"] = "   "
    records[5]["label"] = 2
    del records[6]["text"]
    records[7]["id"] = records[8]["id"]  # duplicate id: line 8 is kept (with line 9's image), line 9 skipped
    records[7]["img"] = records[8]["img"]
    out = [json.dumps(r).encode() for r in records]
    out[9] = b'{"id": 1, "img": "img/00001.png", "label": 0, "text": "caf\xe9"}'  # Latin-1, not UTF-8
    out[10] = b'{"id": 12, "img": '  # broken JSON
    path.write_bytes(b"\n".join(out) + b"\n")
    return {"decode_error": 1, "unidentified_image": 1, "missing_image": 1, "empty_file": 1, "empty_text": 1,
            "unknown_label": 1, "missing_key": 1, "duplicate_id": 1, "encoding": 1, "bad_json": 1}


@pytest.mark.parametrize("image_size", [64, None])
def test_bad_input_is_skipped_by_name_and_counts_reconcile(root, tmp_path, image_size):
    expected = _corrupt(root, tmp_path / "bad")
    manifests = shard_corpus("hateful_memes", tmp_path / "bad", tmp_path / "shards", max_skip_fraction=0.5,
                             reader={"image_size": image_size}, progress=False)
    report = manifests["train"]["report"]
    assert report["skipped_by_reason"] == expected
    assert report["raw"] == 60 == report["written"] + report["skipped"]
    assert all(skip["detail"] and skip["source"] for skip in report["skips"])
    assert manifests["unlabeled"]["unlabeled"] == 15 and sum(manifests["unlabeled"]["class_counts"].values()) == 0
    assert sum(manifests["test"]["class_counts"].values()) == 30


def test_bad_options_and_roots(root, tmp_path):
    with pytest.raises(ConfigError, match="phase"):
        list(hateful_memes.iter_samples(root, "train", phase=3))
    with pytest.raises(ConfigError, match="image_size"):
        hateful_memes.features(root, image_size="big")
    with pytest.raises(ConfigError, match="split"):
        list(hateful_memes.iter_samples(root, "dev"))
    with pytest.raises(ConfigError, match="does not exist"):
        hateful_memes.sources(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="Phase"):
        hateful_memes.sources(tmp_path)


def test_auroc_of_binary_scores_matches_sklearn():
    rng = np.random.default_rng(0)
    truth, logits = rng.integers(0, 2, 80), rng.normal(size=(80, 2))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = classification_metrics(probs, truth)
    assert m["auroc"] == pytest.approx(roc_auc_score(truth, probs[:, 1]))
    assert classification_metrics(logits, truth)["auroc"] == pytest.approx(m["auroc"])  # logits rank the same
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == truth))
    assert "auroc" not in classification_metrics(probs.argmax(1), truth)  # class ids carry no ranking
    assert "auroc" not in classification_metrics(probs, np.zeros(80, int))  # undefined with one class
    json.dumps(m, allow_nan=False)
