"""Shard writing and reading: codecs, determinism, atomicity, integrity checks, partitioning."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

import mmdata
from mmdata.corpora.base import Skip
from mmdata.errors import BadInputError, CodecError, ShardIntegrityError
from mmdata.shards.codec import decode, encode
from mmdata.shards.manifest import MANIFEST, read_manifest
from mmdata.shards.plan import plan_rank
from mmdata.shards.verify import verify
from mmdata.shards.write import write_split
from mmdata.types import Field
from tests.conftest import TOY_FEATURES, toy_samples, write_toy


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("field, value", [
    (Field("float32", (None, 3), "npy"), np.arange(12, dtype=np.float32).reshape(4, 3)),
    (Field("uint8", (5, 7), "npy"), np.arange(35, dtype=np.uint8).reshape(5, 7)),
    (Field("float64", (), "npy"), np.float64(2.5)),
    (Field("str", (), "txt"), "naïve café ✓"),
    (Field("int64", (), "cls", classes=tuple("abcdefghij")), 7),
    (Field("float32", (), "json"), np.float32(-1.25)),
    (Field("uint8", (6, 5, 3), "png"), np.arange(90, dtype=np.uint8).reshape(6, 5, 3)),
    (Field("uint16", (6, 5), "png"), (np.arange(30, dtype=np.uint16) * 2000).reshape(6, 5)),
    (Field("float32", (None, 3), "arrow"), np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)),
    (Field("int64", (None,), "arrow"), np.arange(9, dtype=np.int64)),
])
def test_codec_round_trip_is_exact(field, value):
    data = encode(value, field)
    assert encode(value, field) == data  # deterministic bytes
    back = decode(data, field)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(value))
    if isinstance(value, np.ndarray):
        assert np.asarray(back).dtype == value.dtype


def test_mp4_round_trip_is_close_deterministic_and_checked():
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([(xx * 4 + 20 * t) % 256, yy * 4, (xx + yy) * 2], -1) for t in range(3)])
    frames = frames.astype(np.uint8)
    field = Field("uint8", (None, 64, 64, 3), "mp4", rate=2.0)
    data = encode(frames, field)
    assert data[4:8] == b"ftyp" and encode(frames, field) == data  # an MPEG-4 container, deterministic bytes
    back = decode(data, field)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(np.int16) - frames).mean() < 6  # lossy, close
    with pytest.raises(CodecError, match="uint8 frames"):
        encode(frames.astype(np.float32), field)
    with pytest.raises(CodecError):
        decode(data[: len(data) // 3], field)


@pytest.mark.parametrize("codec", ["arrow", "npy"])
def test_corrupt_payloads_raise_codec_errors(codec):
    field = Field("float32", (None, 3), codec)
    data = encode(np.ones((4, 3), np.float32), field)
    with pytest.raises(CodecError):
        decode(data[: len(data) // 2], field)


def test_jpeg_keeps_source_bytes_and_decodes_rgb():
    import cv2

    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1])
    source = buf.tobytes()
    field = Field("uint8", (16, 16, 3), "jpg")
    assert encode(source, field) == source
    decoded = decode(source, field)
    assert decoded[..., 0].mean() > 150 and decoded[..., 2].mean() < 50


def test_npy_fast_decode_matches_np_load():
    import io

    value = np.random.default_rng(0).standard_normal((50, 768)).astype(np.float32)
    data = encode(value, Field("float32", (50, 768), "npy"))
    np.testing.assert_array_equal(decode(data, Field("float32", (50, 768), "npy")), np.load(io.BytesIO(data)))


def test_two_runs_give_byte_identical_shards(tmp_path):
    write_toy(tmp_path / "a")
    write_toy(tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert len(list((tmp_path / "a").glob("*.tar"))) == 8


def test_manifest_records_hashes_counts_and_report(toy_split):
    manifest = read_manifest(toy_split)
    assert manifest["samples"] == 40 == sum(s["samples"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        assert hashlib.sha256((toy_split / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
        assert (toy_split / shard["name"]).stat().st_size == shard["bytes"]
    assert manifest["class_counts"] == {"a": 14, "b": 13, "c": 13}
    assert manifest["report"]["raw"] == 40 and manifest["report"]["skipped"] == 0
    assert manifest["codecs"]["feat_audio"] == "npy"


def test_shards_are_plain_webdataset_tars(toy_split):
    urls = [str(p) for p in sorted(toy_split.glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(samples) == 40
    assert {"feat_audio.npy", "image.npy", "label.cls", "text.txt"} <= set(samples[0])
    listing = subprocess.run(["tar", "-tf", urls[0]], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:4] == [f"toy/train/s0000.{n}" for n in ("feat_audio.npy", "image.npy", "label.cls", "text.txt")]
    with tarfile.open(urls[0]) as tar:  # no PAX headers, fixed metadata
        assert all(m.mtime == 0 and m.uid == 0 and not m.pax_headers for m in tar.getmembers())


def test_bad_samples_are_skipped_with_reasons_and_counts_reconcile(tmp_path):
    samples = toy_samples(30)
    samples[3]["feat_audio"][0, 0] = np.nan
    samples[5]["label"] = np.int64(7)
    samples[8]["__key__"] = samples[2]["__key__"]
    samples[9]["image"] = samples[9]["image"][:4]
    samples[10]["__key__"] = "toy/train/" + "x" * 90
    items = [*samples, Skip("toy/train/raw-x", "raw/x.bin", "decode_error", "unreadable")]
    manifest = write_split(items, TOY_FEATURES, tmp_path / "s", corpus="toy", split="train", max_samples=10,
                           max_skip_fraction=0.5)
    report = manifest["report"]
    assert report["raw"] == 31 == report["written"] + report["skipped"]
    assert report["skipped_by_reason"] == {"decode_error": 1, "duplicate_key": 1, "key_too_long": 1,
                                           "label_range": 1, "non_finite": 1, "shape": 1}
    dup = next(s for s in report["skips"] if s["reason"] == "duplicate_key")
    assert dup["key"] == samples[2]["__key__"]


def test_too_many_skips_fail_and_commit_nothing(tmp_path):
    samples = toy_samples(10)
    for s in samples[:3]:
        s["label"] = np.int64(9)
    with pytest.raises(BadInputError, match="label_range"):
        write_split(samples, TOY_FEATURES, tmp_path / "s", corpus="toy", split="train")
    assert not tmp_path.joinpath("s").exists() and list(tmp_path.iterdir()) == []


def test_no_samples_is_an_error(tmp_path):
    with pytest.raises(BadInputError, match="no sample"):
        write_split([], TOY_FEATURES, tmp_path / "s", corpus="toy", split="train")


_SLOW_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.conftest import TOY_FEATURES, toy_samples
from mmdata.shards.write import write_split
def slow():
    for i, s in enumerate(toy_samples(400)):
        if i == 30:
            print("writing", flush=True)
        time.sleep(0.005)
        yield s
write_split(slow(), TOY_FEATURES, {out!r}, corpus="toy", split="train", max_samples=5)
"""


def test_killed_write_leaves_nothing_that_looks_done_and_rerun_is_identical(tmp_path):
    out = tmp_path / "killed" / "train"
    code = _SLOW_WRITER.format(root=str(Path(__file__).parents[1]), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # Left behind: the temporary folder and the lock file, whose flock the kernel dropped with the process.
    leftovers = sorted(p.name for p in out.parent.iterdir())
    assert leftovers == ["train.lock", f"train.tmp-{proc.pid}"]
    assert not any(p.name == MANIFEST for p in (out.parent / leftovers[1]).iterdir())
    with pytest.raises(ShardIntegrityError):
        mmdata.load(out, "train")
    from mmdata.shards.publish import remove_stale

    assert remove_stale(out) == [out.parent / f"train.tmp-{proc.pid}"]
    write_split(toy_samples(400), TOY_FEATURES, out, corpus="toy", split="train", max_samples=5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["train"]  # the next run took and removed the lock
    write_split(toy_samples(400), TOY_FEATURES, tmp_path / "clean" / "train", corpus="toy", split="train",
                max_samples=5)
    assert _digests(out) == _digests(tmp_path / "clean" / "train")


def _all_keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["__key__"]]


def test_truncated_shard_is_caught_by_load_and_verify(toy_split):
    shard = sorted(toy_split.glob("*.tar"))[3]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardIntegrityError, match=shard.name):
        _all_keys(mmdata.load(toy_split))
    problems = verify(toy_split)["train"]
    assert len(problems) == 1 and shard.name in problems[0]


@pytest.mark.parametrize("where", ["header", "payload"])
def test_bit_flip_is_caught_by_load_and_verify(toy_split, where):
    shard = sorted(toy_split.glob("*.tar"))[2]
    data = bytearray(shard.read_bytes())
    # Member 1 (image.npy of the first sample): header at 512*k, payload right after it.
    with tarfile.open(shard) as tar:
        member = tar.getmembers()[1]
    pos = member.offset + 20 if where == "header" else member.offset_data + 150
    data[pos] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=shard.name):
        _all_keys(mmdata.load(toy_split, fields=["image"]))
    assert verify(toy_split)["train"] and shard.name in verify(toy_split)["train"][0]


def test_verify_flags_unlisted_tar_and_cli_exit_status(toy_split):
    from mmdata.cli import main

    assert main(["verify", str(toy_split)]) == 0
    (toy_split / "toy-train-000099.tar").write_bytes(b"\0" * 1024)
    assert main(["verify", str(toy_split)]) == 1


def test_only_requested_fields_are_read(toy_split):
    # Damage every text payload: a run that asks only for image and label never reads them.
    for shard in toy_split.glob("*.tar"):
        data = bytearray(shard.read_bytes())
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".text.txt"):
                    data[member.offset_data] ^= 0xFF
        shard.write_bytes(bytes(data))
    batches = list(mmdata.load(toy_split, fields=["image", "label"], batch_size=8))
    assert set(batches[0]) == {"__key__", "image", "label"}
    assert sum(len(b["__key__"]) for b in batches) == 40
    with pytest.raises(ShardIntegrityError, match="text"):
        _all_keys(mmdata.load(toy_split, fields=["text"]))


def test_batches_have_tensors_lengths_and_masks(toy_split):
    batch = next(iter(mmdata.load(toy_split, batch_size=16, shuffle=False)))
    assert batch["image"].shape == (16, 8, 8) and str(batch["image"].dtype) == "torch.uint8"
    lengths, mask = batch["feat_audio_lengths"], batch["feat_audio_mask"]
    assert batch["feat_audio"].shape[:2] == mask.shape and mask.sum(1).tolist() == lengths.tolist()
    assert (batch["feat_audio"][~mask] == 0).all()
    assert batch["label"].dtype.is_floating_point is False and isinstance(batch["text"], list)


def test_partition_two_ranks_two_workers_disjoint_complete_equal(tmp_path):
    split = tmp_path / "toy" / "train"
    write_toy(split, n=43, max_samples=4)  # 11 shards, the last one short: uneven ranks
    per_rank, seen = [], []
    for rank in range(2):
        loader = mmdata.load(split, batch_size=5, rank=rank, world_size=2, num_workers=2, seed=3, epoch=1)
        batches = list(loader)
        per_rank.append(len(batches))
        assert len(batches) == len(loader)
        keys = [k for b in batches for k in b["__key__"]]
        seen.append(keys[: len(keys) - loader.padded])
        # worker w yields batches w, w+2, ...: each (rank, worker) share is disjoint from the others
    assert per_rank[0] == per_rank[1]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"toy/train/s{i:04d}" for i in range(43)]


def test_worker_shares_are_disjoint(tmp_path):
    split = tmp_path / "toy" / "train"
    write_toy(split, n=40, max_samples=4)
    batches = plan_rank(mmdata.load(split).shards.shard_rows, batch_size=5, world_size=2, rank=0).batches
    shares = [np.concatenate(batches[w::2]) for w in range(2)]
    assert not set(shares[0]) & set(shares[1])


def test_shuffle_is_epoch_seeded_and_identical_for_any_worker_count(toy_split):
    orders = {w: _all_keys(mmdata.load(toy_split, batch_size=6, seed=5, epoch=2, num_workers=w)) for w in (0, 1, 3)}
    assert orders[0] == orders[1] == orders[3]
    other_epoch = _all_keys(mmdata.load(toy_split, batch_size=6, seed=5, epoch=3))
    assert sorted(other_epoch) == sorted(orders[0]) and other_epoch != orders[0]
    unshuffled = _all_keys(mmdata.load(toy_split, batch_size=6, shuffle=False))
    assert unshuffled == sorted(unshuffled)


def test_more_ranks_than_shards_is_a_clear_error(tmp_path):
    split = tmp_path / "toy" / "train"
    write_toy(split, n=10, max_samples=5)
    with pytest.raises(ValueError, match="2 shards cannot be split over 3 ranks"):
        mmdata.load(split, world_size=3, rank=0)


def test_verify_option_rehashes_at_open(toy_split):
    shard = sorted(toy_split.glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 1  # in the end-of-archive padding: no member read would see it
    shard.write_bytes(bytes(data))
    assert len(_all_keys(mmdata.load(toy_split))) == 40
    with pytest.raises(ShardIntegrityError, match="sha256"):
        mmdata.load(toy_split, verify=True)


def _pairs_samples(n: int) -> list[dict]:
    """Toy 'one image, several captions' samples: sample i holds i % 3 + 1 captions, each with a label."""
    out = []
    for i in range(n):
        count = i % 3 + 1
        out.append({"__key__": f"toy/train/img{i:03d}", "image": np.full((4, 4), i, np.uint8),
                    "text": [f"caption {i}.{j}" for j in range(count)], "label": [j % 2 for j in range(count)],
                    "__rows__": [{"id": f"c{j}", "label": j % 2, "pick": j} for j in range(count)]})
    return out


PAIR_FEATURES = {"image": Field("uint8", (4, 4), "npy"), "text": Field("str", (None,), "json"),
                 "label": Field("int64", (None,), "json", classes=("no", "yes"))}


def test_pick_view_stores_each_image_once_and_expands_rows_on_reading(tmp_path):
    from mmdata.types import View

    view = View("pick", ("text",))
    manifest = write_split(_pairs_samples(12), PAIR_FEATURES, tmp_path / "s", corpus="toy", split="train",
                           max_samples=4, view=view)
    assert manifest["samples"] == 12 and manifest["rows"] == 24 and manifest["class_counts"] == {"no": 16, "yes": 8}
    assert verify(tmp_path / "s") == {"s": []}
    loader = mmdata.load(tmp_path / "s", batch_size=5, shuffle=False)
    assert loader.features["text"].shape == () and loader.features["label"].shape == ()
    batches = list(loader)
    keys = [k for b in batches for k in b["__key__"]]
    assert len(keys) == 24 and keys[:3] == ["toy/train/img000/c0", "toy/train/img001/c0", "toy/train/img001/c1"]
    texts = [t for b in batches for t in b["text"]]
    assert texts[2] == "caption 1.1" and batches[0]["label"].tolist() == [0, 0, 1, 0, 1]
    assert batches[0]["image"][2, 0, 0].item() == 1
    tar_samples = list(wds.WebDataset([str(p) for p in sorted((tmp_path / "s").glob("*.tar"))], shardshuffle=False))
    assert len(tar_samples) == 12


def test_window_view_cuts_windows_at_read_time(tmp_path):
    from mmdata.types import View

    series = np.arange(40, dtype=np.float32).reshape(20, 2)
    sample = {"__key__": "toy/train/all", "series": series, "label": np.zeros(20, np.float32),
              "__rows__": [{"id": f"w{s}", "label": float(series[s + 5, 0]), "start": s} for s in range(15)]}
    features = {"series": Field("float32", (None, 2), "npy"), "label": Field("float32", (None,), "npy")}
    write_split([sample], features, tmp_path / "s", corpus="toy", split="train", view=View("window", ("series",), 5))
    loader = mmdata.load(tmp_path / "s", batch_size=15, shuffle=False)
    batch = next(iter(loader))
    assert batch["series"].shape == (15, 5, 2) and loader.features["series"].shape == (5, 2)
    np.testing.assert_array_equal(batch["series"][3].numpy(), series[3:8])
    assert batch["label"].tolist() == [float(series[s + 5, 0]) for s in range(15)]


def test_bad_view_rows_are_skipped(tmp_path):
    from mmdata.types import View

    samples = _pairs_samples(20)
    samples[4]["__rows__"][0]["pick"] = 7  # outside the 2 captions
    samples[5]["__rows__"][0]["label"] = 3  # not a class
    manifest = write_split(samples, PAIR_FEATURES, tmp_path / "s", corpus="toy", split="train",
                           view=View("pick", ("text",)), max_skip_fraction=0.2)
    assert manifest["report"]["skipped_by_reason"] == {"bad_row": 1, "label_range": 1}
