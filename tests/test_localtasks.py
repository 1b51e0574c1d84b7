"""The local two-phase engine (issue 14.3): with several processes, a corpus read in parts is read, checked and
encoded by the workers themselves (:mod:`mmdata.shards.localtasks`), and every output file equals one process's;
skips, duplicates and byte cuts merge exactly; a task's error and a killed worker fail the run with nothing
published and nothing left in shared memory; result files go when their references do."""
from __future__ import annotations

import errno
import gc
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import mmdata.shards.build as build_module
import mmdata.shards.write as write_module
from mmdata.errors import DiskFullError, RemoteTraceback, ShardIntegrityError
from mmdata.shards import handoff
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode
from mmdata.shards.localtasks import LocalSplit, LocalTasks
from mmdata.shards.parts import FAULTS_ENV
from mmdata.shards.write import write_split
from tests.conftest import TOY_FEATURES, toy_samples
from tests.minis import CONTRACT, PARAMS, file_bytes, minis, raw, toy_items  # noqa: F401 - minis: autouse


@pytest.fixture
def splits(monkeypatch):
    """The number of splits each run wrote with the local two-phase engine (LocalSplit.write calls)."""
    calls = []
    original = LocalSplit.write
    monkeypatch.setattr(LocalSplit, "write", lambda self, *a: calls.append(self.what) or original(self, *a))
    return calls


def _shm_leftovers() -> list[str]:
    """This process's folders of result files (another test run on the machine may hold its own meanwhile)."""
    root = handoff.scratch_root() or tempfile.gettempdir()
    return [name for name in os.listdir(root) if name.startswith(f"mmdata-parts-{os.getpid()}-")]


def _shard(name: str, root, out, processes: int, max_samples: int) -> dict:
    return shard_corpus(name, root, out, reader=PARAMS[name]["reader"], max_samples=max_samples, progress=False,
                        max_skip_fraction=0.5, processes=processes)


@pytest.mark.parametrize("name, max_samples", [("avmnist", 90), ("crema_d", 30), ("snli_ve", 40),
                                               ("mosei", 60), ("mmimdb", 25)])
def test_two_processes_write_the_bytes_of_one(tmp_path, splits, name, max_samples):
    """npy rows (avmnist), wav + flv with broken clips (crema_d), images shared by pairs (snli_ve, a View), SDK
    .csd segments (mosei) and jpeg + json per movie (mmimdb), each damaged as the parts contract test damages it
    (duplicate ids, missing files, broken lines): the same manifests, skips and files as one process."""
    root = CONTRACT[name][0](tmp_path)
    one = _shard(name, root, tmp_path / "p1" / name, 1, max_samples)
    assert not splits
    two = _shard(name, root, tmp_path / "p2" / name, 2, max_samples)
    assert len(splits) == len(one)  # every split went through the two phases
    assert one == two
    assert max(len(m["shards"]) for m in one.values()) >= 2
    files = file_bytes(tmp_path / "p1" / name)
    assert files == file_bytes(tmp_path / "p2" / name)
    assert not _shm_leftovers()


@pytest.mark.parametrize("name", ["mosi", "stocks"])
def test_sources_read_whole_keep_the_driver_engine(tmp_path, splits, name):
    """A pickle release (MOSI) and the stock windows (counted in index rows) are read once, by the driver."""
    one = _shard(name, raw(name), tmp_path / "p1" / name, 1, 25)
    two = _shard(name, raw(name), tmp_path / "p2" / name, 2, 25)
    assert not splits and one == two
    assert file_bytes(tmp_path / "p1" / name) == file_bytes(tmp_path / "p2" / name)


def test_skips_duplicates_and_byte_cuts_merge_exactly(tmp_path):
    """Items the driver reads (the fallback path) with what admission and the checks refuse: skip list, repairs,
    audit and shards equal one process's."""
    kwargs = {"corpus": "toy", "split": "train", "max_samples": 8, "max_bytes": 14_000, "max_skip_fraction": 0.2}
    local = write_split(toy_items(), TOY_FEATURES, tmp_path / "one" / "train", **kwargs)
    run = LocalSplit(2, toy_items(), part_size=7)
    parted = write_split(run.items(), TOY_FEATURES, tmp_path / "two" / "train", writer=run.write, **kwargs)
    assert local == parted
    assert {s["reason"] for s in local["report"]["skips"]} >= {"duplicate_key", "bad_key", "shape"}
    assert len({s["samples"] for s in local["shards"]}) > 1  # cut by bytes and by count
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")
    assert not _shm_leftovers()


def _encode_failing(value, field):
    """An encoder bug on one sample's text (the workers inherit the patched module: they are forked)."""
    if field.codec == "txt" and value == "sample 31":
        raise RuntimeError("encoder bug")
    return encode(value, field)


def test_an_encoder_error_fails_the_run_with_nothing_published(tmp_path, monkeypatch):
    """Found in phase 1, it is raised by the driver when the sample is admitted (as one process raises it)."""
    monkeypatch.setattr(write_module, "encode", _encode_failing)
    run = LocalSplit(2, toy_samples(60), part_size=7)
    with pytest.raises(RuntimeError, match="encoder bug"):
        write_split(run.items(), TOY_FEATURES, tmp_path / "out" / "train", corpus="toy", split="train",
                    max_samples=8, writer=run.write)
    assert not list((tmp_path / "out").iterdir())
    assert not _shm_leftovers() and not [w for w in run.tasks.workers if w.process.is_alive()]


@pytest.mark.parametrize("task", ["part1", "shard2"])
def test_a_killed_worker_fails_the_run_and_an_earlier_output_stays(tmp_path, monkeypatch, task):
    """The worker reading part 1, or writing shard 2, exits at once (as if killed): a ShardIntegrityError, the
    earlier output as it was, no temporary folder, lock or shared-memory file left."""
    out = tmp_path / "out" / "avmnist"
    _shard("avmnist", raw("avmnist"), out, 1, 90)
    before = file_bytes(out)
    (tmp_path / "faults").mkdir()
    (tmp_path / "faults" / f"avmnist-train-{task}").write_text("1")
    monkeypatch.setenv(FAULTS_ENV, str(tmp_path / "faults"))
    with pytest.raises(ShardIntegrityError, match="process died"):
        _shard("avmnist", raw("avmnist"), out, 2, 90)
    assert (tmp_path / "faults" / f"avmnist-train-{task}").read_text() == "0"
    assert file_bytes(out) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["avmnist"]
    assert not _shm_leftovers()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _pair(n: int) -> tuple[list[int], bytes]:
    return list(range(n)), b"x" * n


def _total(numbers: list[int], data: bytes) -> int:
    return sum(numbers) + len(data)


def _fail(text: str) -> None:
    raise ValueError(text)


def test_results_are_files_removed_with_their_references():
    """A task's results are read by a later task on any worker; a task's error is raised as itself with the
    worker's traceback; each file goes once the driver drops its reference and no task that reads it is out; the
    folder goes at close."""
    tasks = LocalTasks(2)
    factor = tasks.put(3)
    numbers, data = tasks.submit(_pair, 5, returns=2)
    total = tasks.submit(_total, numbers, data)
    paths = [numbers.path, data.path, total.path]
    assert tasks.get(total, "toy") == 10 + 5 and tasks.get(factor, "toy") == 3
    assert all(path.exists() for path in paths)
    failed = tasks.submit(_fail, "bad value")
    with pytest.raises(ValueError, match="bad value") as caught:
        tasks.get(failed, "toy")
    assert isinstance(caught.value.__cause__, RemoteTraceback) and "_fail" in str(caught.value.__cause__)
    del numbers, data
    gc.collect()
    assert [path.exists() for path in paths] == [False, False, True]
    with pytest.raises(RuntimeError, match="after the workers started"):
        tasks.put(4)
    folder = paths[2].parent
    tasks.close()
    assert not folder.exists()


def test_a_failed_background_fsync_in_a_worker_is_a_disk_full_error_naming_the_shard(tmp_path, monkeypatch):
    """The shard-writing tasks leave their fsyncs to the worker's background syncs; the driver waits for every
    worker's before the index: ENOSPC there is one DiskFullError naming a shard, and nothing is published."""
    monkeypatch.setattr(os, "fsync", _enospc)
    out = tmp_path / "out" / "avmnist"
    with pytest.raises(DiskFullError, match=r"avmnist-train-\d{6}\.tar") as caught:
        _shard("avmnist", raw("avmnist"), out, 2, 90)
    assert caught.value.__cause__ is not None
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert not _shm_leftovers()


def _unreadable(path):
    raise PermissionError(13, "Permission denied", str(path))


def test_raw_files_are_hashed_meanwhile_and_a_hashing_error_is_raised_as_itself(tmp_path, monkeypatch):
    """With several processes the fingerprint's files are hashed by a forked process while the splits are
    written (the manifests equal one process's: the test above); when hashing fails there, the driver hashes
    again and raises the error itself; nothing is published and the hashing process is reaped."""
    monkeypatch.setattr(build_module, "sha256_file", _unreadable)
    with pytest.raises(PermissionError, match="Permission denied"):
        _shard("avmnist", raw("avmnist"), tmp_path / "out" / "avmnist", 2, 90)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert not multiprocessing.active_children()


def test_a_killed_writers_folders_are_removed_by_the_next_run(tmp_path):
    """A writer killed with SIGKILL leaves its folder of hand-over files (memory, in /dev/shm); the next one
    removes the folders of processes that are gone, and keeps those of live ones."""
    root = Path(handoff.scratch_root() or tempfile.gettempdir())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = [root / f"mmdata-{kind}-{dead}-test" for kind in ("parts", "handoff")]
    live = root / f"mmdata-parts-{os.getppid()}-test"
    for folder in (*stale, live):
        folder.mkdir()
        (folder / "result-0-0").write_bytes(b"x" * 100)
    try:
        LocalTasks(2).close()
        handoff.scratch_folder("handoff").cleanup()
        assert [folder.exists() for folder in (*stale, live)] == [False, False, True]
    finally:
        for folder in (*stale, live):
            shutil.rmtree(folder, ignore_errors=True)


_SLOW_RUN = """
import os, sys, time
sys.path.insert(0, {repo!r})
import mmdata.shards.write as write_module
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode

def slow(value, field):
    time.sleep(0.002)
    return encode(value, field)

write_module.encode = slow
print(os.getpid(), flush=True)
shard_corpus("avmnist", {root!r}, {out!r}, max_samples=40, progress=False, processes={processes})
"""


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process parents from /proc")
@pytest.mark.parametrize("name", ["avmnist", "mosi"])
def test_a_writer_killed_with_sigkill_leaves_no_worker_holding_its_lock(tmp_path, name):
    """SIGKILL to the driver mid-write (two-phase engine: avmnist; driver engine: mosi, read whole): its workers
    and hashing process end too (they inherited the output lock's flock and the driver's pipe ends), so the next
    run takes the lock, removes the killed run's folders and writes the output."""
    out = tmp_path / "out" / name
    code = _SLOW_RUN.format(repo=str(Path(__file__).parents[1]), root=str(raw(name)), out=str(out), processes=2)
    code = code.replace('"avmnist"', repr(name))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    deadline = time.monotonic() + 60
    while len(_children(pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    children = _children(pid)
    assert len(children) >= 2, "the workers never started"
    os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{child}").exists() for child in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [child for child in children if Path(f"/proc/{child}").exists()]
    assert not (out / "mmdata.json").exists()
    _shard(name, raw(name), out, 2, 40)  # a worker still holding the flock would make this a LockError
    root = Path(handoff.scratch_root() or tempfile.gettempdir())
    assert not list(root.glob(f"mmdata-*-{pid}-*"))
    assert sorted(p.name for p in out.parent.iterdir()) == [name]  # no temporary folder or lock file left
