"""SNLI-VE: the mini's layout in both key styles, the one-image-many-pairs storage, skips, and the text encoder."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from scipy.stats import chisquare

import mmdata
from methods.blocks import build_encoder, encoder_kind
from methods.text import TextEncoder, hashed_ngrams, tokens
from mmdata.corpora import get_corpus, snli_ve
from mmdata.corpora.base import Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS
from mmdata.synth.snli_ve import COLOURS, SHAPES, generate
from mmdata.types import KEY_PATTERN, ROWS, Field

SIZES = {"train": 24, "valid": 6, "test": 8}
SNLI_KEYS = {"annotator_labels", "captionID", "gold_label", "pairID", "sentence1", "sentence1_binary_parse",
             "sentence1_parse", "sentence2", "sentence2_binary_parse", "sentence2_parse"}
FILES = ("snli_ve_train.jsonl", "snli_ve_dev.jsonl", "snli_ve_test.jsonl")


@pytest.fixture(scope="module", params=["Flikr30kID", "Flickr30K_ID"])
def root(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("ve") / "ve", seed=0, key_style=request.param, no_gold=0.5, **SIZES)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read(root: Path, split: str, **options) -> tuple[list[dict], list[Skip]]:
    items = list(snli_ve.iter_samples(root, split, **options))
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, Skip)]


def test_registered():
    corpus = get_corpus("snli_ve")
    assert corpus is snli_ve.CORPUS and SYNTHS["snli_ve"] is generate
    assert corpus.options() == {"image_size"} and corpus.splits == ("train", "valid", "test")
    assert corpus.view.kind == "pick" and corpus.view.fields == ("text_hypothesis",)


def test_layout_in_both_key_styles(root):
    style = "Flikr30kID" if "Flikr30kID" in lines(root / FILES[0])[0] else "Flickr30K_ID"
    images = {p.stem for p in (root / "flickr30k_images").glob("*.jpg")}
    assert len(images) == sum(SIZES.values())
    for name in FILES:
        raw = (root / name).read_text().splitlines()
        for text, record in zip(raw, map(json.loads, raw)):
            assert list(record) == sorted(record) and set(record) == SNLI_KEYS | {style}
            image = record[style][:-4] if style == "Flikr30kID" else record[style]
            assert (record[style].endswith(".jpg")) == (style == "Flikr30kID") and image in images
            assert record["pairID"].startswith(f"{image}.jpg#") and record["captionID"].startswith(f"{image}.jpg#")
            assert record["gold_label"] in ("entailment", "neutral", "contradiction", "-")
    assert any(r["gold_label"] == "-" for name in FILES for r in lines(root / name))
    assert (root / "flickr30k_images" / f"{image}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


def test_generate_is_deterministic(tmp_path):
    def digest(folder: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()

    assert digest(generate(tmp_path / "a", **SIZES)) == digest(generate(tmp_path / "b", **SIZES))
    assert digest(generate(tmp_path / "c", seed=1, **SIZES)) != digest(tmp_path / "a")


def test_labels_need_image_and_hypothesis(tmp_path):
    records = lines(generate(tmp_path / "big", seed=2, train=300, valid=1, test=1, no_gold=0.0) / FILES[0])
    words = lambda text, vocab: [w for w in text.split() if w in vocab]
    by_label = {label: Counter() for label in ("entailment", "neutral", "contradiction")}
    for r in records:
        (colour, shape), (c, s) = (words(r["sentence1"], COLOURS) + words(r["sentence1"], SHAPES),
                                   words(r["sentence2"], COLOURS) + words(r["sentence2"], SHAPES))
        rule = "contradiction" if c != colour else "neutral" if s != shape else "entailment"
        assert r["gold_label"] == rule
        by_label[r["gold_label"]][c, s] += 1
    # Hypothesis wordings are spread evenly over the 9 colour-shape pairs under every label: text alone is
    # at chance, and every image carries each label equally often: the image alone is too.
    for counts in by_label.values():
        assert len(counts) == 9 and chisquare(list(counts.values())).pvalue > 1e-3


def test_reader_groups_pairs_per_image(root):
    features = snli_ve.features(root)
    records = [r for r in lines(root / FILES[0]) if r["gold_label"] != "-"]
    samples, skips = read(root, "train")
    assert {s.reason for s in skips} == {"no_gold_label"} and len(skips) == len(lines(root / FILES[0])) - len(records)
    assert len(samples) == 24 and sum(len(s[ROWS]) for s in samples) == len(records) == 24 * 6
    keys = [s["__key__"] for s in samples]
    assert keys == sorted(keys) and all(KEY_PATTERN.match(k) for k in keys)
    for sample in samples:
        assert len(sample["text_hypothesis"]) == len(sample["label"]) == len(sample[ROWS]) == 6
        assert [row["pick"] for row in sample[ROWS]] == list(range(6))
        assert all(KEY_PATTERN.match(f"{sample['__key__']}/{row['id']}") for row in sample[ROWS])
        check_sample({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}, features)
    first = samples[0]
    image = first["__key__"].rsplit("/", 1)[1]
    mine = [r for r in records if r["pairID"].startswith(f"{image}.jpg#")]
    assert first["text_hypothesis"] == [r["sentence2"] for r in mine]
    assert first["label"] == [("entailment", "neutral", "contradiction").index(r["gold_label"]) for r in mine]
    assert first["image"] == (root / "flickr30k_images" / f"{image}.jpg").read_bytes()  # 112 px: bytes kept


def test_both_key_styles_read_the_same(tmp_path):
    old = read(generate(tmp_path / "old", key_style="Flikr30kID", **SIZES), "test")[0]
    new = read(generate(tmp_path / "new", key_style="Flickr30K_ID", **SIZES), "test")[0]
    strip = lambda s: {k: v for k, v in s.items() if k != "__source__"}
    assert [strip(s) for s in old] == [strip(s) for s in new]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ve_shards")
    root = generate(base / "raw", seed=0, train=40, valid=6, test=8, no_gold=0.0)
    shard_corpus("snli_ve", root, base / "out", max_samples=10, progress=False)
    return base / "out"


def test_reading_expands_one_pair_per_row(shards):
    loader = mmdata.load(shards, "train", batch_size=7, shuffle=False)
    assert loader.features["text_hypothesis"] == Field("str", (), "json", description=loader.features[
        "text_hypothesis"].description)
    batches = list(loader)
    keys = [k for b in batches for k in b["__key__"]]
    assert len(keys) == 40 * 6 == len(set(keys)) and all(k.count("/") == 3 for k in keys)
    first = batches[0]
    assert first["image"].shape == (7, 112, 112, 3) and first["image"].dtype == torch.uint8
    assert isinstance(first["text_hypothesis"][0], str) and first["label"].dtype == torch.int64
    assert torch.equal(first["image"][0], first["image"][5])  # six pairs of one image, one stored copy


def test_shard_bytes_grow_with_images_not_pairs(shards, tmp_path):
    total = sum(p.stat().st_size for p in (shards / "train").glob("*.tar"))
    index = pq.read_table(shards / "train" / "index.parquet").to_pydict()
    images = dict(zip(index["sample"], index["size_image"]))
    assert len(images) == 40 and len(index["key"]) == 240
    assert total <= 1.5 * sum(images.values()), (total, sum(images.values()))
    root = generate(tmp_path / "raw", seed=0, train=40, valid=6, test=8, no_gold=0.0, captions=5)
    shard_corpus("snli_ve", root, tmp_path / "out", max_samples=10, progress=False)
    more = sum(p.stat().st_size for p in (tmp_path / "out" / "train").glob("*.tar"))
    assert more < 1.15 * total  # 2.5x the pairs, almost the same bytes


def _corrupt(root: Path, dest: Path) -> tuple[dict[str, int], int]:
    """A copy with one fault of each kind in the train file; (expected skip reasons, pairs of bad images)."""
    copy = shutil.copytree(root, dest)
    path = copy / FILES[0]
    records = lines(path)
    key = "Flikr30kID" if "Flikr30kID" in records[0] else "Flickr30K_ID"
    image_of = lambda r: copy / "flickr30k_images" / (r[key].removesuffix(".jpg") + ".jpg")
    bad = [image_of(records[i]) for i in (0, 6, 12)]
    bad[0].write_bytes(bad[0].read_bytes()[:bad[0].stat().st_size // 2])  # truncated JPEG
    bad[1].write_bytes(b"\x00" * 64)  # not an image
    bad[2].unlink()
    good = [i for i, r in enumerate(records) if image_of(r) not in bad and r["gold_label"] != "-"]
    records[good[0]]["sentence2"] = ""
    records[good[1]]["gold_label"] = "maybe"
    records[good[2]]["gold_label"] = "-"
    del records[good[3]]["sentence2"]
    del records[good[4]][key]
    records[good[5]]["pairID"] = records[good[6]]["pairID"]  # the later line is the duplicate
    out = [json.dumps(r, sort_keys=True).encode() for r in records]
    out[good[7]] = out[good[7]].replace(b"sentence2\": \"", b"sentence2\": \"caf\xe9 ")
    out[good[8]] = b'{"gold_label": "entailment", '
    path.write_bytes(b"\n".join(out) + b"\n")
    pairs = sum(image_of(r) in bad for r in records if r["gold_label"] != "-" and r.get(key))
    reasons = {"decode_error": 1, "unidentified_image": 1, "missing_image": 1, "empty_text": 1, "unknown_label": 1,
               "no_gold_label": 1, "missing_key": 2, "duplicate_id": 1, "encoding": 1, "bad_json": 1}
    return reasons, pairs


@pytest.mark.parametrize("image_size", [112, None, 64])
def test_bad_input_is_skipped_by_name_and_counts_reconcile(root, tmp_path, image_size):
    (reasons, bad_pairs), raw_lines = _corrupt(root, tmp_path / "bad"), len(lines(root / FILES[0]))
    dashes = sum(r["gold_label"] == "-" for r in lines(root / FILES[0]))
    reasons["no_gold_label"] += dashes
    manifest = shard_corpus("snli_ve", tmp_path / "bad", tmp_path / "out", max_skip_fraction=0.9,
                            reader={"image_size": image_size}, progress=False)["train"]
    report = manifest["report"]
    assert report["skipped_by_reason"] == reasons
    assert report["raw"] == report["written"] + report["skipped"] == 24 + sum(reasons.values()) - 3
    line_skips = report["skipped"] - 3
    assert raw_lines == manifest["rows"] + line_skips + bad_pairs  # every line: a row, a skip, or a lost pair
    for skip in report["skips"]:
        if skip["reason"] == "missing_image":
            assert "pairs" in skip["detail"]


def test_variable_size_images_keep_bytes_and_say_they_cannot_be_batched(root):
    field = snli_ve.features(root, image_size=None)["image"]
    assert field.shape == (None, None, 3) and field.codec == "jpg"
    with pytest.raises(ValueError, match="image_size"):
        encoder_kind("image", field)
    assert snli_ve.features(root, image_size=[48, 64])["image"].shape == (48, 64, 3)
    with pytest.raises(ConfigError, match="image_size"):
        snli_ve.features(root, image_size=0)


def test_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="snli_ve_train.jsonl"):
        snli_ve.sources(tmp_path)
    with pytest.raises(ConfigError, match="split"):
        list(snli_ve.iter_samples(tmp_path, "dev"))


# --- the hashed n-gram text encoder ---


def test_hashing_is_stable_across_processes():
    text = "A man, don't sleep! Ünïcode café"
    assert tokens(text) == ["a", "man", "don't", "sleep", "ünïcode", "café"]
    ids = hashed_ngrams(text, 1000)
    assert len(ids) == 6 + 5 and ids[0] == zlib.crc32(b"a") % 1000 and ids[6] == zlib.crc32(b"a man") % 1000
    code = f"from methods.text import hashed_ngrams; print(list(hashed_ngrams({text!r}, 1000)))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[1], env={"PYTHONHASHSEED": "123"})
    assert json.loads(other.stdout) == list(ids)
    assert hashed_ngrams(text, 1000, 1) == ids[:6] and hashed_ngrams("...", 1000) == ()


def test_text_encoder_shapes_and_empty_text():
    torch.manual_seed(0)
    encoder = TextEncoder(8, buckets=64)
    out = encoder(["a red circle", "", "a red circle"])
    assert out.shape == (3, 8) and torch.isfinite(out).all() and torch.equal(out[0], out[2])
    out.sum().backward()
    assert encoder.bag.weight.grad.abs().sum() > 0
    assert encoder_kind("text", Field("str", (), "txt")) == "text"
    assert isinstance(build_encoder("text_plot", Field("str", (), "txt"), 8, text_ngrams=1), TextEncoder)
    with pytest.raises(ValueError):
        encoder_kind("text_hypothesis", Field("str", (None,), "json"))
    with pytest.raises(ValueError):
        TextEncoder(8, ngrams=0)
