"""Outputs (issue 10.1): never replace what mmdata did not write; one writer per output; clean interrupts.

Covers fault rows SHW-02 (SIGTERM/SIGINT), SHW-03 (disk full), SHW-05 (concurrent writers), SHW-06 (stale
temporary folders) and the data-loss defect: ``mmdata shard --out`` pointed at a folder holding other files.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mmdata.cli import main
from mmdata.errors import DiskFullError, LockError, OutputError
from mmdata.shards.build import shard_corpus
from mmdata.shards.manifest import MANIFEST
from mmdata.shards.publish import output_lock, remove_stale
from mmdata.shards.verify import verify
from mmdata.synth import write_synth
from tests.conftest import TOY_FEATURES, toy_samples, write_toy

ROOT = Path(__file__).parents[1]


def _tree(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path`` (the bytes a command must leave alone)."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic AV-MNIST (the smallest corpus to shard)."""
    return write_synth("avmnist", tmp_path_factory.mktemp("raw") / "avmnist", train=60, test=20)


def test_out_holding_the_raw_corpus_and_a_foreign_file_is_left_byte_identical(capsys, raw, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(raw, data / "avmnist")
    (data / "notes.txt").write_text("my notes")
    before = _tree(data)
    status = main(["shard", "avmnist", "--root", str(data / "avmnist"), "--out", str(data)])
    err = capsys.readouterr().err
    assert status != 0 and "OutputError" in err and str(data) in err and "Traceback" not in err
    assert _tree(data) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_out_holding_a_foreign_file_is_refused_and_untouched(capsys, raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("chapter 1")
    status = main(["shard", "avmnist", "--root", str(raw), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "thesis.tex" in err and "not an earlier mmdata output" in err
    assert _tree(out) == {"thesis.tex": hashlib.sha256(b"chapter 1").hexdigest()}


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_out_equal_to_or_containing_the_raw_root_is_refused(raw, tmp_path, where):
    root = tmp_path / "corpus"
    shutil.copytree(raw, root / "avmnist")
    target = root / "avmnist" if where == "equal" else root
    before = _tree(root)
    with pytest.raises(OutputError, match="contains the raw corpus"):
        shard_corpus("avmnist", root / "avmnist", target)
    assert _tree(root) == before


def test_an_earlier_output_of_the_same_corpus_is_replaced(raw, tmp_path):
    out = tmp_path / "shards" / "avmnist"
    shard_corpus("avmnist", raw, out, max_samples=10)
    first = _tree(out)
    shard_corpus("avmnist", raw, out, max_samples=7)  # different shard sizes: a real replacement
    assert _tree(out) != first and not verify(out)["train"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["avmnist"]  # no lock, temp or old folder left


def test_an_output_of_another_corpus_or_with_a_foreign_file_inside_a_split_is_refused(raw, tmp_path):
    out = tmp_path / "shards" / "avmnist"
    shard_corpus("avmnist", raw, out)
    (out / "train" / "README.txt").write_text("mine")
    with pytest.raises(OutputError, match="README.txt"):
        shard_corpus("avmnist", raw, out)
    assert (out / "train" / "README.txt").read_text() == "mine"
    toy = tmp_path / "toy"
    write_toy(toy / "train")
    with pytest.raises(OutputError, match="belongs to toy/train"):
        shard_corpus("avmnist", raw, toy)


def test_write_split_refuses_a_folder_it_did_not_write(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    (split / "data.csv").write_text("a,b")
    with pytest.raises(OutputError, match="data.csv"):
        write_toy(split)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_a_second_run_fails_at_once_while_the_lock_is_held_and_waits_when_asked(raw, tmp_path):
    out = tmp_path / "avmnist"
    with output_lock(out):
        started = time.monotonic()
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            shard_corpus("avmnist", raw, out)
        assert time.monotonic() - started < 5 and not out.exists()
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.update(shard_corpus("avmnist", raw, out, wait=True)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not out.exists()  # queued behind the holder
    waiter.join(timeout=120)
    assert set(result) == {"train", "valid", "test"} and not any(verify(out).values())


_SLOW_SHARD = """
import signal, sys, time
# Ctrl-C raises KeyboardInterrupt, as in a terminal: a shell starts background jobs (a CI script run with '&')
# with SIGINT ignored, and Python keeps an ignored SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
from mmdata.corpora import avmnist
from mmdata.shards.build import shard_corpus
real = avmnist.CORPUS.iter_samples
def slow(*args, **kwargs):
    for i, item in enumerate(real(*args, **kwargs)):
        if i == 5:
            print("writing", flush=True)
            time.sleep({pause})  # a signal test's signal lands here, whatever the machine's load
        time.sleep(0.02)
        yield item
object.__setattr__(avmnist.CORPUS, "iter_samples", slow)
shard_corpus("avmnist", {raw!r}, {out!r}, max_samples=4, wait={wait})
print("published", flush=True)
"""


def _slow_shard(raw: Path, out: Path, wait: bool = False, pause: float = 0.0) -> subprocess.Popen:
    code = _SLOW_SHARD.format(root=str(ROOT), raw=str(raw), out=str(out), wait=wait, pause=pause)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_concurrent_runs_never_publish_a_partial_output(raw, tmp_path):
    out = tmp_path / "avmnist"
    first = _slow_shard(raw, out)
    assert first.stdout.readline().strip() == "writing"
    second = _slow_shard(raw, out)
    _, err = second.communicate(timeout=120)
    assert second.returncode != 0 and "LockError" in err and "another mmdata run" in err
    assert first.communicate(timeout=300)[0].strip().endswith("published") and first.returncode == 0
    assert set(verify(out)) == {"train", "valid", "test"} and not any(verify(out).values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_leaves_nothing_that_looks_finished(raw, tmp_path, signum):
    out = tmp_path / "avmnist"
    # The run pauses mid-write: on a loaded machine it could otherwise finish before the signal arrives.
    proc = _slow_shard(raw, out, pause=60)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []  # temporary folder and lock file removed, nothing published


def test_cleanup_removes_only_the_temporary_folders_of_dead_processes(tmp_path):
    out = tmp_path / "avmnist"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid in (live.pid, dead.pid):
            (tmp_path / f"avmnist.tmp-{pid}").mkdir()
        (tmp_path / "other.tmp-1").mkdir()  # not this output's: never touched
        assert remove_stale(out) == [tmp_path / f"avmnist.tmp-{dead.pid}"]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"avmnist.tmp-{live.pid}", "other.tmp-1"])
    finally:
        live.kill()
        live.wait()


def test_disk_full_names_the_file_and_publishes_nothing(monkeypatch, tmp_path):
    from mmdata.shards import tar

    calls = {"n": 0}
    real_write = tar._HashingFile.write

    def write(self, data):
        calls["n"] += 1
        if calls["n"] > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(tar._HashingFile, "write", write)
    out = tmp_path / "toy" / "train"
    with pytest.raises(DiskFullError, match=r"toy-train-\d{6}\.tar\.partial: no space left on device \(ENOSPC\)"):
        write_toy(out)
    assert list(tmp_path.iterdir()) == [] or list((tmp_path / "toy").iterdir()) == []


def test_disk_full_on_a_real_small_tmpfs(capsys, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        from mmdata.shards.write import write_split

        big = [{**s, "image": s["image"]} for s in toy_samples(400)]
        with pytest.raises(DiskFullError, match="ENOSPC") as info:
            write_split(big, TOY_FEATURES, mount / "toy" / "train", corpus="toy", split="train", max_samples=50)
        assert str(mount) in str(info.value)
        assert not (mount / "toy" / "train" / MANIFEST).exists() and not (mount / "toy" / "train").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_expected_errors_print_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    status = main(["shard", "avmnist", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "missing" in err and "mmdata synth" in err  # the file and the fix
    proc = subprocess.run([sys.executable, "-m", "mmdata.cli", "--debug", "shard", "avmnist", "--root",
                           str(tmp_path / "missing"), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_synth_never_replaces_a_folder(capsys, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "download.zip").write_bytes(b"PK")
    assert main(["synth", "avmnist", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and _tree(out) == {"download.zip": hashlib.sha256(b"PK").hexdigest()}


def test_a_truncated_raw_npy_is_one_named_error(capsys, raw, tmp_path):
    root = tmp_path / "avmnist"
    shutil.copytree(raw, root)
    path = root / "image" / "train_data.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    status = main(["shard", "avmnist", "--root", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "BadInputError" in err and str(path) in err and "truncated" in err
    assert not (tmp_path / "out").exists()
