"""The writing engine (issue 14.3): 1 and 2 processes write byte-identical splits; a failing or killed task
publishes nothing; the post-write header check still catches a shard whose keys differ; the fast tar headers
equal tarfile's."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

import mmdata.shards.write as write_module
from mmdata.errors import ShardIntegrityError
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode
from mmdata.shards.tar import _tarfile_header, archive_end, member_header
from mmdata.shards.write import write_split
from mmdata.synth import SYNTHS
from mmdata.types import Field
from tests.conftest import TOY_FEATURES, toy_samples


def _files(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory`` (the corpus record's paths left out)."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "mmdata.json"}


@pytest.mark.parametrize("corpus, sizes", [("avmnist", {"train": 60, "test": 20}), ("hateful_memes", {})])
def test_one_and_two_processes_write_identical_corpora(tmp_path, corpus, sizes):
    root = SYNTHS[corpus](tmp_path / "raw", **sizes)
    outs = [tmp_path / f"p{p}" / corpus for p in (1, 2)]
    manifests = [shard_corpus(corpus, root, out, max_samples=7, progress=False, processes=p)
                 for out, p in zip(outs, (1, 2))]
    assert max(len(m["shards"]) for m in manifests[0].values()) > 2  # several shards, so several tasks
    assert manifests[0] == manifests[1]
    assert _files(outs[0]) == _files(outs[1]) and len(_files(outs[0])) > 10


def _png_samples(n: int) -> list[dict]:
    """Toy samples plus a PNG image of random size (its encoded size is unknown before encoding)."""
    rng = np.random.default_rng(3)
    return [{**s, "image_photo": rng.integers(0, 255, (int(rng.integers(4, 40)), 8, 3), dtype=np.uint8)}
            for s in toy_samples(n)]


@pytest.mark.parametrize("kind", ["known sizes", "unknown sizes"])
def test_shards_cut_by_bytes_are_identical_for_any_process_count(tmp_path, kind):
    """Shards cut by max_bytes: planned exactly (npy, txt) or re-run when the plan was wrong (png)."""
    if kind == "known sizes":
        samples, features = toy_samples(60), TOY_FEATURES
        for i in range(0, 60, 7):
            samples[i]["text"] = "x" * (3000 + 100 * i)
    else:
        samples, features = _png_samples(60), {**TOY_FEATURES, "image_photo": Field("uint8", (None, 8, 3), "png")}
    runs = [write_split(samples, features, tmp_path / f"p{p}" / "s", corpus="toy", split="train", max_samples=9,
                        max_bytes=12_000, processes=p) for p in (1, 2, 3)]
    counts = [s["samples"] for s in runs[0]["shards"]]
    assert len(set(counts)) > 1 and max(counts) <= 9  # cut by bytes, and by count
    assert runs[0] == runs[1] == runs[2]
    assert _files(tmp_path / "p1") == _files(tmp_path / "p2") == _files(tmp_path / "p3")


def _encode_failing(value, field):
    """Module level, so a forked worker finds it: an encoder bug on one sample's text."""
    if field.codec == "txt" and value == "sample 31":
        raise RuntimeError("encoder bug")
    return encode(value, field)


def _encode_dying(value, field):
    """A worker killed mid-task (out of memory, kill -9) on one sample."""
    if field.codec == "txt" and value == "sample 31":
        os._exit(9)
    return encode(value, field)


@pytest.mark.parametrize("processes", [1, 2])
def test_an_error_in_one_task_publishes_nothing(tmp_path, monkeypatch, processes):
    monkeypatch.setattr(write_module, "encode", _encode_failing)
    with pytest.raises(RuntimeError, match="encoder bug"):
        write_split(toy_samples(60), TOY_FEATURES, tmp_path / "toy" / "train", corpus="toy", split="train",
                    max_samples=5, processes=processes)
    assert list(tmp_path.iterdir()) == [] or not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_killed_worker_fails_the_run_and_publishes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "encode", _encode_dying)
    with pytest.raises(ShardIntegrityError, match="process died"):
        write_split(toy_samples(60), TOY_FEATURES, tmp_path / "toy" / "train", corpus="toy", split="train",
                    max_samples=5, processes=2)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_post_write_check_catches_a_shard_whose_keys_differ(tmp_path, monkeypatch):
    real = write_module.shard_keys
    monkeypatch.setattr(write_module, "shard_keys", lambda path: real(path)[:-1] + ["toy/train/other"])
    with pytest.raises(ShardIntegrityError, match="reconciliation failed"):
        write_split(toy_samples(20), TOY_FEATURES, tmp_path / "toy" / "train", corpus="toy", split="train",
                    max_samples=5, processes=2)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_shard_keys_reads_a_damaged_header_as_tarfile_does(tmp_path):
    write_split(toy_samples(10), TOY_FEATURES, tmp_path / "s", corpus="toy", split="train", max_samples=10)
    shard = next((tmp_path / "s").glob("*.tar"))
    data = bytearray(shard.read_bytes())
    assert write_module.shard_keys(shard) == [f"toy/train/s{i:04d}" for i in range(10)]
    second = 512 + 1024  # the second member's header (the first payload is under 1024 bytes)
    data[second + 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with tarfile.open(shard) as tar:
        expected = list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar))
    assert write_module.shard_keys(shard) == expected


NAMES = ["", "a", "x" * 99, "x" * 100, "x" * 101, "avmnist/train/000001.image.npy", "é" * 50, "ü" * 51]
SIZES = [0, 1, 511, 512, 513, 10 ** 6, 8 ** 11 - 1, 8 ** 11, 10 ** 12]


@pytest.mark.parametrize("name", NAMES)
def test_member_headers_equal_tarfile(name):
    for size in SIZES:
        assert member_header(name, size) == _tarfile_header(name, size), (name, size)


def test_archive_end_equals_tarfile_close():
    for offset in range(0, 30 * 512, 512):
        buffer = io.BytesIO()
        tar = tarfile.TarFile(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT)
        tar.offset = offset
        tar.close()
        assert buffer.getvalue() == archive_end(offset), offset
