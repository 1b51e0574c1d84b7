"""Remote shards (mmdata.shards.remote, mmdata.shards.cache) against a real S3 API on 127.0.0.1 (moto's server).

The same batches as the local split (0 and 2 workers), the cache bound under many shards, a truncated object
(at open and during the epoch), an altered object, dropped connections (a cutting TCP proxy in front of moto)
and short reads (a wrapped filesystem) retried to a complete epoch, and a corrupted cached shard re-fetched.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mmdata
from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.shards import cache, remote, verified
from mmdata.shards.build import shard_corpus
from mmdata.synth import write_synth
from tests.conftest import write_toy
from tests.faultproxy import CuttingProxy
from tests.s3server import s3, s3_endpoint  # noqa: F401

pytest.importorskip("s3fs", reason="s3fs is the s3 extra (make test installs it)")

OPTIONS = {"batch_size": 6, "seed": 3}
SHARD = 30720  # bytes of each toy shard (5 samples)


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test starts as a new process would; failed reads retry without long pauses."""
    verified.forget()
    cache.forget()
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    yield
    verified.forget()
    cache.forget()


def _upload(s3, directory: Path, prefix: str) -> str:
    """Every file under ``directory`` to ``s3://<bucket>/<prefix>/...``; the prefix's URL."""
    client = s3.client()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        client.upload_file(str(path), s3.bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")
    return s3.url(prefix)


@pytest.fixture
def toy(tmp_path, s3):
    """A toy corpus (8 shards) on disk and on the S3 server: (local corpus dir, corpus URL)."""
    write_toy(tmp_path / "toy" / "train")
    return tmp_path / "toy", _upload(s3, tmp_path / "toy", "shards/toy")


def _plain(batches) -> list[dict]:
    return [{k: v.numpy().copy() if isinstance(v, torch.Tensor) else list(v) for k, v in b.items()} for b in batches]


def _epochs(loader, epochs=(0, 1)) -> list[dict]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += _plain(loader)
    return out


def _same(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert list(a) == list(b)
        for name in a:
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def _cached_bytes(directory: Path) -> int:
    """Bytes of cached shards and reservations, counted under the cache's lock (as the workers count them)."""
    total = 0
    fd = os.open(directory / "shards" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for entry in os.scandir(directory / "shards"):
            if entry.name.endswith((".tar", ".partial")):  # removed and renamed only under the lock
                total += entry.stat().st_size
    finally:
        os.close(fd)
    return total


@pytest.mark.parametrize("workers", [0, 2])
def test_remote_split_gives_the_local_batches(toy, tmp_path, workers):
    local, url = toy
    expected = _epochs(mmdata.load(local, "train", **OPTIONS))
    with mmdata.load(url, "train", num_workers=workers, cache_dir=tmp_path / "cache", **OPTIONS) as loader:
        assert loader.shards.directory == f"{url}/train"
        got = _epochs(loader)
    _same(expected, got)
    with mmdata.load(f"{url}/train", "train", cache_dir=tmp_path / "cache", **OPTIONS) as loader:  # warm cache
        _same(expected, _epochs(loader))


def test_a_mini_read_from_s3_equals_the_local_read(s3, tmp_path):
    """The AV-MNIST mini as `dvc repro` shards it (params.yaml's synth and shard settings), built here."""
    block = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["corpora"]["avmnist"]
    mini = tmp_path / "shards"
    shard_corpus("avmnist", write_synth("avmnist", tmp_path / "raw", **block["synth"]), mini, progress=False,
                 reader=block["reader"], **block["shard"])
    url = _upload(s3, mini / "train", "mini/avmnist/train")
    expected = _plain(mmdata.load(mini, "train", batch_size=64, seed=1))
    with mmdata.load(url, "train", batch_size=64, seed=1, cache_dir=tmp_path / "cache") as loader:
        _same(expected, _plain(loader))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_cache_bound_holds_over_many_shards(toy, tmp_path, workers):
    """Room for 4 of 8 shards, 2 shards per batch: shards are evicted and fetched again, the bound holds."""
    local, url = toy
    limit = 4 * SHARD
    options = {"batch_size": 2, "seed": 5}
    expected = _epochs(mmdata.load(local, "train", **options))
    got = []
    with mmdata.load(url, "train", num_workers=workers, cache_dir=tmp_path / "c", cache_bytes=limit,
                     **options) as loader:
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            for batch in loader:
                got += _plain([batch])
                assert _cached_bytes(tmp_path / "c") <= limit
    _same(expected, got)
    assert len(list((tmp_path / "c" / "shards").glob("*.tar"))) <= 4


def test_a_shard_larger_than_the_bound_is_an_error_naming_it(toy, tmp_path):
    with pytest.raises(ShardIntegrityError, match=r"toy-train-00000\d\.tar.*exceed the cache bound of 1000 bytes"):
        list(mmdata.load(toy[1], "train", cache_dir=tmp_path / "c", cache_bytes=1000, **OPTIONS))


def test_a_bound_below_one_batchs_shards_fails_naming_the_bound(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "ROOM_WAIT_S", 0.2)
    with pytest.raises(ShardIntegrityError, match=rf"no room for {SHARD} bytes in the cache .* \(bound {SHARD + 1} "
                                                  r"bytes\) .* raise cache_bytes"):
        list(mmdata.load(toy[1], "train", cache_dir=tmp_path / "c", cache_bytes=SHARD + 1, **OPTIONS))


def test_a_download_left_by_a_killed_process_is_cleared(toy, tmp_path):
    """An unlocked ``.partial`` (its writer died) holds no room and is removed by the next reservation."""
    (tmp_path / "c" / "shards").mkdir(parents=True)
    stale = tmp_path / "c" / "shards" / f".{'0' * 64}.dead.partial"
    stale.write_bytes(bytes(3 * SHARD))
    with mmdata.load(toy[1], "train", cache_dir=tmp_path / "c", cache_bytes=8 * SHARD, **OPTIONS) as loader:
        _same(_plain(mmdata.load(toy[0], "train", **OPTIONS)), _plain(loader))
    assert not stale.exists()


def test_a_truncated_object_fails_at_open_naming_the_shard(toy, s3, tmp_path):
    local, url = toy
    shard = local / "train" / "toy-train-000003.tar"
    s3.client().put_object(Bucket=s3.bucket, Key="shards/toy/train/toy-train-000003.tar",
                           Body=shard.read_bytes()[:20000])
    with pytest.raises(ShardIntegrityError, match=r"toy-train-000003\.tar: 20000 bytes on the remote, manifest says "
                                                  rf"{SHARD} \(truncated"):
        mmdata.load(url, "train", cache_dir=tmp_path / "c", **OPTIONS)


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_an_object_damaged_after_open_fails_naming_url_and_shard(toy, s3, tmp_path, damage):
    """Replaced on the server between open and the epoch: retried, then a named error, never fewer samples."""
    local, url = toy
    loader = mmdata.load(url, "train", cache_dir=tmp_path / "c", shuffle=False, batch_size=5)
    data = bytearray((local / "train" / "toy-train-000002.tar").read_bytes())
    if damage == "truncated":
        data = data[:12345]
    else:
        data[2000] ^= 0xFF
    s3.client().put_object(Bucket=s3.bucket, Key="shards/toy/train/toy-train-000002.tar", Body=bytes(data))
    expected = "short read|range is not satisfiable" if damage == "truncated" else "sha256 .* the manifest says"
    with pytest.raises(ShardIntegrityError, match=rf"{url}/train/toy-train-000002\.tar: shard toy-train-000002\.tar: "
                                                  rf"(.*)({expected}).*gave up after {remote.RETRIES} attempts"):
        list(loader)
    assert not list((tmp_path / "c" / "shards").glob(".*.partial"))  # nothing half-written left behind


@pytest.mark.parametrize("workers", [0, 2])
def test_dropped_connections_are_retried_to_a_complete_epoch(toy, s3_endpoint, tmp_path, monkeypatch, workers):
    """A proxy cuts 3 responses mid-body; s3fs's own retries are off, so mmdata's retry completes the epoch."""
    import s3fs
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    local, url = toy
    proxy = CuttingProxy(int(s3_endpoint.rsplit(":", 1)[1]), cuts=3, after=8000)
    try:
        with mmdata.load(url, "train", num_workers=workers, cache_dir=tmp_path / "c",
                         storage_options={"endpoint_url": proxy.url}, **OPTIONS) as loader:
            got = _plain(loader)
    finally:
        proxy.close()
    assert proxy.cut == 3
    _same(_plain(mmdata.load(local, "train", **OPTIONS)), got)


class _ShortReads:
    """A filesystem whose first ``n`` shard reads return half the bytes asked for (no error raised)."""

    def __init__(self, fs, n: int) -> None:
        self.fs, self.left, self.short = fs, n, 0

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = self.fs.cat_file(path, start=start, end=end, **kwargs)
        if path.endswith(".tar") and self.left > 0:
            self.left, self.short = self.left - 1, self.short + 1
            return data[:len(data) // 2]
        return data


def test_short_reads_resume_where_they_stopped(toy, tmp_path, monkeypatch):
    local, url = toy
    wrapped = []
    real = remote.filesystem

    def short_filesystem(*args, **kwargs):
        fs, path = real(*args, **kwargs)
        wrapped.append(_ShortReads(fs, 5))
        return wrapped[-1], path

    monkeypatch.setattr(remote, "filesystem", short_filesystem)
    with mmdata.load(url, "train", cache_dir=tmp_path / "c", **OPTIONS) as loader:
        got = _plain(loader)
    _same(_plain(mmdata.load(local, "train", **OPTIONS)), got)
    assert sum(w.short for w in wrapped) == 5


def test_a_corrupted_cached_shard_is_detected_and_fetched_again(toy, tmp_path):
    local, url = toy
    expected = _plain(mmdata.load(local, "train", **OPTIONS))
    with mmdata.load(url, "train", cache_dir=tmp_path / "c", **OPTIONS) as loader:
        _same(expected, _plain(loader))
    cached = sorted((tmp_path / "c" / "shards").glob("*.tar"))[3]
    with open(cached, "r+b") as handle:  # same size, flipped bytes: only the sha256 can tell
        handle.seek(1500)
        byte = handle.read(1)
        handle.seek(1500)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with mmdata.load(url, "train", cache_dir=tmp_path / "c", **OPTIONS) as loader:
        _same(expected, _plain(loader))
    assert remote.hashlib.sha256(cached.read_bytes()).hexdigest() == cached.stem


def test_a_settled_verified_shard_is_not_rehashed_by_the_next_process(toy, tmp_path, monkeypatch):
    """``<sha>.ok`` carries a settled file version's check across processes; a write changes the version."""
    local, url = toy
    monkeypatch.setattr(cache, "SETTLE_NS", 0)  # every file counts as settled
    hashed = []
    real = cache._hash_fd
    monkeypatch.setattr(cache, "_hash_fd", lambda fd: hashed.append(fd) or real(fd))
    expected = _plain(mmdata.load(local, "train", **OPTIONS))
    for run in range(3):  # fetch; a new process re-hashes and records; the next one trusts the record
        cache.forget()
        verified.forget()
        with mmdata.load(url, "train", cache_dir=tmp_path / "c", **OPTIONS) as loader:
            _same(expected, _plain(loader))
        assert len(hashed) == [0, 8, 8][run]
    cached = sorted((tmp_path / "c" / "shards").glob("*.tar"))[0]
    os.utime(cached)  # a write would change the version the same way (mtime, ctime)
    cache.forget()
    list(mmdata.load(url, "train", cache_dir=tmp_path / "c", **OPTIONS))
    assert len(hashed) == 9


def test_without_s3fs_the_error_names_the_extra(toy, tmp_path, monkeypatch):
    import importlib
    registry = importlib.import_module("fsspec.registry")  # the module, not the mapping fsspec exports
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "s3fs", None)
    with pytest.raises(ConfigError, match=r"pip install 'mmdata\[s3\]'"):
        mmdata.load(toy[1], "train", cache_dir=tmp_path / "c")


def test_memory_urls_work_the_same_way(tmp_path):
    """Any fsspec protocol: memory:// needs no server."""
    import fsspec
    write_toy(tmp_path / "toy" / "train")
    fs = fsspec.filesystem("memory")
    fs.put(str(tmp_path / "toy"), f"/mmdata-test-{os.getpid()}/toy", recursive=True)
    with mmdata.load(f"memory://mmdata-test-{os.getpid()}/toy", "train", cache_dir=tmp_path / "c",
                     **OPTIONS) as loader:
        got = _plain(loader)
    _same(_plain(mmdata.load(tmp_path / "toy", "train", **OPTIONS)), got)
