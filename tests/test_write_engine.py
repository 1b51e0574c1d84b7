"""The writing engine (issue 14.3): 1 and 2 processes write byte-identical splits; a failing or killed task
publishes nothing; the post-write header check still catches a shard whose keys differ; the fast tar headers
equal tarfile's."""
from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import pickle
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import mmdata.shards.write as write_module
from mmdata.errors import ShardIntegrityError
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode
from mmdata.shards.tar import _tarfile_header, archive_end, member_header, shard_keys
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
    """A worker process killed mid-task (out of memory, kill -9) on its first sample; the driver, which runs
    tasks too, is not (its death ends the run with nothing to report)."""
    if field.codec == "txt" and multiprocessing.parent_process() is not None:
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


class _Unpicklable(Exception):
    def __init__(self, a, b):  # two required arguments: pickle cannot rebuild it from its args
        super().__init__(f"{a} {b}")


def _encode_unpicklable(value, field):
    if field.codec == "txt" and value == "sample 31":
        raise _Unpicklable("cannot", "pickle")
    return encode(value, field)


def _slot_folders() -> set[str]:
    from mmdata.shards.handoff import scratch_root

    # This process's only: another test run on the machine may hold its own meanwhile.
    return {p.name for p in Path(scratch_root() or tempfile.gettempdir()).glob(f"mmdata-handoff-{os.getpid()}-*")}


def _pool_job(tmp_path: Path, encoder=encode):
    """A job of 5-sample toy shards written under ``tmp_path/out`` and 40 admitted toy samples for its tasks."""
    from mmdata.shards.engine import ShardJob

    (tmp_path / "out").mkdir(exist_ok=True)
    job = ShardJob(tmp_path / "out", "toy-train", TOY_FEATURES, "label", 5, 1 << 20, encoder)
    return job, [(i, s, None, {}, "raw") for i, s in enumerate(toy_samples(40))]


def _pool_run(tmp_path: Path, encoder) -> None:
    """One task of toy samples 30-34 run by a worker of a TaskPool with this encoder; raises its error."""
    from mmdata.shards.task import Task
    from mmdata.shards.taskpool import TaskPool

    job, samples = _pool_job(tmp_path, encoder)
    pool = TaskPool(job, 1)
    try:
        pool.result(pool.submit(Task(0, 30, samples[30:35], False)))
    finally:
        pool.close(True)


def test_a_worker_error_keeps_its_traceback_and_one_that_does_not_unpickle_arrives_as_text(tmp_path):
    from mmdata.errors import RemoteTraceback

    with pytest.raises(RuntimeError, match="encoder bug") as caught:
        _pool_run(tmp_path, _encode_failing)
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "_encode_failing" in str(caught.value.__cause__)  # the worker's own traceback
    with pytest.raises(RuntimeError, match="_Unpicklable: cannot pickle") as caught:
        _pool_run(tmp_path, _encode_unpicklable)
    assert "_encode_unpicklable" in str(caught.value.__cause__)


@pytest.mark.parametrize("fail", [False, True])
def test_workers_and_their_slot_files_are_gone_after_a_run(tmp_path, monkeypatch, fail):
    before = _slot_folders()
    if fail:
        monkeypatch.setattr(write_module, "encode", _encode_failing)
    try:
        write_split(toy_samples(60), TOY_FEATURES, tmp_path / "toy" / "train", corpus="toy", split="train",
                    max_samples=5, processes=3)
    except RuntimeError:
        assert fail
    assert multiprocessing.active_children() == []
    assert _slot_folders() == before


def test_the_pool_gives_each_task_in_flight_its_own_slot_and_reuses_it_after_its_result(tmp_path):
    """More tasks than slots, every result read back: each worker holds DEPTH tasks at most and no two tasks
    in flight share a slot file (a shared slot would hand a worker another task's arrays)."""
    from mmdata.shards.task import Task
    from mmdata.shards.taskpool import DEPTH, TaskPool

    job, samples = _pool_job(tmp_path)
    pool = TaskPool(job, 2)
    failed = True
    try:
        futures = []
        for index in range(8):
            while not pool.has_room():
                pool.collect(block=True)
            futures.append(pool.submit(Task(index, 5 * index, samples[5 * index:5 * index + 5], index == 7)))
            out = [slot for w in pool.workers for _, slot in w.pending]
            assert len(out) == len(set(out)) and all(len(w.pending) <= DEPTH for w in pool.workers)
        results = [pool.result(f) for f in futures]
        failed = False
    finally:
        pool.close(failed)
    assert [r.record["keys"] for r in results] == [[s["__key__"] for _, s, *_ in samples[5 * i:5 * i + 5]]
                                                   for i in range(8)]
    assert len(pool.free) == 2 * DEPTH


@pytest.mark.parametrize("processes", [1, 2])
def test_every_shard_is_fsynced_before_the_index_is_written(tmp_path, monkeypatch, processes):
    """The fsyncs run in the background (mmdata.shards.durable), in the driver and in the workers; the engine
    waits for all of them before the index (and so the manifest) is written. Each fsync logs its file's name to a
    file (a worker's log reaches the test too) after a delay, so a sync not waited for would be missed."""
    log, real_fsync, real_index = tmp_path / "fsynced.log", os.fsync, write_module.write_index

    def slow_fsync(fd):
        time.sleep(0.05)
        real_fsync(fd)
        with open(log, "a") as out:
            out.write(Path(os.readlink(f"/proc/self/fd/{fd}")).name + "\n")

    def index_after_syncs(path, rows):
        shards = {p.name for p in path.parent.glob("*.tar")}
        assert shards and shards <= set(log.read_text().split()), "index written before every shard was synced"
        return real_index(path, rows)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(write_module, "write_index", index_after_syncs)
    manifest = write_split(toy_samples(40), TOY_FEATURES, tmp_path / "toy" / "train", corpus="toy", split="train",
                           max_samples=5, processes=processes)
    assert len(manifest["shards"]) == 8


def _wrong_keys(path: Path) -> list[str]:
    return shard_keys(path)[:-1] + ["toy/train/other"]


def test_the_post_write_check_catches_a_shard_whose_keys_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "shard_keys", _wrong_keys)  # module level: a job sent to workers names it
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


def _failing_samples(n: int) -> list:
    """Toy samples with check failures (non-finite, label range), long texts (byte cuts), a duplicate of a
    passing key, a duplicate of a failing key and a reader skip, mixed."""
    from mmdata.corpora.base import Skip

    items: list = []
    for i, sample in enumerate(toy_samples(n)):
        if i % 5 == 3:
            sample["feat_audio"] = sample["feat_audio"] * np.float32("nan")
        if i % 7 == 4:
            sample["label"] = np.int64(9)
        if i % 4 == 1:
            sample["text"] = "x" * 2500
        items.append(sample)
    items.insert(20, dict(items[2]))  # duplicate of a passing sample
    items.insert(30, {**items[3], "feat_audio": np.zeros((2, 3), np.float32)})  # same key as a failing one
    items.insert(40, Skip("toy/train/r", "src", "reader_skip", "skipped by the reader"))
    return items


def test_checks_in_tasks_keep_boundaries_skips_in_source_order_and_first_copy_claims_the_key(tmp_path):
    items, features = _failing_samples(90), TOY_FEATURES
    runs = [write_split(items, features, tmp_path / f"p{p}" / "s", corpus="toy", split="train", max_samples=6,
                        max_bytes=9000, max_skip_fraction=0.9, processes=p) for p in (1, 2, 3)]
    assert runs[0] == runs[1] == runs[2]
    assert _files(tmp_path / "p1") == _files(tmp_path / "p2") == _files(tmp_path / "p3")
    # The shards are those of a sequential writer fed only the samples that pass.
    keys = [k for s in runs[0]["shards"] for k in (s["first_key"], s["last_key"])]
    passing = [s for i, s in enumerate(items) if isinstance(s, dict) and s["__key__"] != "toy/train/s0003"
               and i != 20 and np.isfinite(s["feat_audio"]).all() and s["label"] < 3]
    reference = write_split(passing, features, tmp_path / "ref" / "s", corpus="toy", split="train", max_samples=6,
                            max_bytes=9000)
    assert keys == [k for s in reference["shards"] for k in (s["first_key"], s["last_key"])]
    assert [s["sha256"] for s in runs[0]["shards"]] == [s["sha256"] for s in reference["shards"]]
    report = runs[0]["report"]
    assert report["raw"] == report["written"] + report["skipped"] == len(items)
    seen, expected = set(), []  # a sequential model: the skips in source order
    for item in items:
        key = item["__key__"] if isinstance(item, dict) else item.key
        failing = isinstance(item, dict) and not (np.isfinite(item["feat_audio"]).all() and item["label"] < 3)
        if not isinstance(item, dict) or key in seen or failing:
            expected.append(key)
        seen.add(key)
    assert [s["key"] for s in report["skips"]] == expected
    first, again = [s for s in report["skips"] if s["key"] == "toy/train/s0003"]
    assert first["reason"] == "non_finite" and again["reason"] == "duplicate_key"
    assert "then skipped: non_finite" in again["detail"]


@pytest.mark.parametrize("max_bytes", [10 ** 9, 2500])
def test_runs_of_failing_samples_longer_than_a_shard_and_at_the_end(tmp_path, max_bytes):
    items = toy_samples(40)
    for i in [*range(10, 26), *range(35, 40)]:
        items[i]["label"] = np.int64(5)
    runs = [write_split(items, TOY_FEATURES, tmp_path / f"p{p}" / "s", corpus="toy", split="train", max_samples=4,
                        max_bytes=max_bytes, max_skip_fraction=0.9, processes=p) for p in (1, 2)]
    assert runs[0] == runs[1] and _files(tmp_path / "p1") == _files(tmp_path / "p2")
    assert runs[0]["samples"] == 19 and runs[0]["report"]["skipped_by_reason"] == {"label_range": 21}
    assert [s["last_key"] for s in runs[0]["shards"]][-1] == "toy/train/s0034"


@pytest.mark.parametrize("value, reason", [
    (np.array([1e308, 1e308]), None),
    (np.array([1.0, np.nan]), "non_finite"),
    (np.array([np.inf, -np.inf]), "non_finite"),  # the sum is NaN
    (np.array([1.0, 2.0], np.float32), "dtype"),
    (np.array([1.0, 2.0, 3.0]), "shape"),
])
def test_the_value_check_keeps_its_verdicts(value, reason):
    """check_value, with what it derives once per Field cached, still gives each verdict."""
    from mmdata.corpora.check import check_value
    from mmdata.errors import SampleError

    spec = Field("float64", (2,), "npy")
    if reason is None:
        check_value("x", value, spec)
        return
    with pytest.raises(SampleError) as caught:
        check_value("x", value, spec)
    assert caught.value.reason == reason


@pytest.mark.parametrize("value, unlabeled, ok", [
    (np.int64(2), None, True), (np.int64(3), None, False), (np.int64(-1), None, False),
    (np.int64(-1), -1, True), (np.array([0, 2, -1]), -1, True), (np.array([0, 3]), -1, False),
])
def test_the_label_check_takes_classes_and_the_unlabeled_value(value, unlabeled, ok):
    from mmdata.corpora.check import check_value
    from mmdata.errors import SampleError

    spec = Field("int64", np.shape(value), "cls", classes=("a", "b", "c"), unlabeled=unlabeled)
    if ok:
        check_value("label", value, spec)
    else:
        with pytest.raises(SampleError, match="label_range|not in"):
            check_value("label", value, spec)


def test_the_handoff_gives_a_worker_the_samples_it_was_given(tmp_path):
    """pack/unpack: stacked columns (same dtype and shape, C order) come back as equal read-only rows, in the
    samples' own key order; other values (ragged, Fortran order, object, 0-d, scalars, text) as pickled."""
    from mmdata.shards.handoff import pack, unpack
    from mmdata.shards.task import Task

    rng = np.random.default_rng(0)
    samples = []
    for i in range(5):
        sample = {"__key__": f"toy/train/{i}", "image": rng.random((3, 4), dtype=np.float32),
                  "ragged": np.arange(i + 1), "fortran": np.asfortranarray(rng.random((2, 3))),
                  "objects": np.array([str(i), None], object), "zero_d": np.array(i), "label": np.int64(i),
                  "empty": np.zeros((0, 2), np.int16), "text": f"sample {i}", "source": bytes([i]) * 300_000}
        samples.append((i, sample, None, {"fixed": i}, f"raw/{i}"))
    task = Task(3, 10, samples, True)
    message = pack(task, tmp_path / "slot")
    path, meta_size, sizes, columns = message
    assert {name for name, *_ in columns} == {"image", "empty"}
    # 1.5 MB of source bytes travel in the slot file: what goes down the pipe stays small, so the driver never
    # blocks sending a task to a worker that is itself blocked sending a result
    assert meta_size > 1_500_000 and len(pickle.dumps(message)) < 2000
    back = unpack(path, meta_size, sizes, columns)
    assert (back.index, back.start, back.final) == (3, 10, True)
    for (pos, want, *rest), (got_pos, got, *got_rest) in zip(samples, back.samples):
        assert (pos, rest) == (got_pos, got_rest) and list(got) == list(want)
        for name, value in want.items():
            assert type(got[name]) is type(value) and np.array_equal(np.asarray(got[name]), np.asarray(value))
            if isinstance(value, np.ndarray):
                assert got[name].dtype == value.dtype and got[name].flags.f_contiguous == value.flags.f_contiguous
        assert not got["image"].flags.writeable
