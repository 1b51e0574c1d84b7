"""Background fsyncs of closed shards (mmdata.shards.durable): errors name their shard and are raised at the
wait, a failed run's syncs do not leak into the next run, and a forked worker keeps its own."""
from __future__ import annotations

import errno
import multiprocessing
import os

import pytest

from mmdata.errors import DiskFullError
from mmdata.shards import durable
from mmdata.shards.durable import MAX_PENDING, Syncs, syncs
from tests.conftest import write_toy


def _failing(code: int):
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))
    return fsync


def _handles(tmp_path, count: int) -> list:
    out = []
    for i in range(count):
        handle = open(tmp_path / f"s{i}.tar", "wb")
        handle.write(b"x")
        handle.flush()
        out.append(handle)
    return out


@pytest.mark.parametrize("code, kind", [(errno.ENOSPC, DiskFullError), (errno.EIO, OSError)])
def test_a_failed_sync_is_raised_at_the_wait_naming_its_shard_and_its_file_is_closed(tmp_path, monkeypatch,
                                                                                     code, kind):
    monkeypatch.setattr(os, "fsync", _failing(code))
    queue = Syncs()
    handle, = _handles(tmp_path, 1)
    queue.add(handle, tmp_path / "s0.tar")
    with pytest.raises(kind, match="s0.tar") as caught:
        queue.wait()
    assert caught.value.errno == code and handle.closed and not queue.pending


def test_more_than_max_pending_waits_for_the_oldest_and_raises_its_error_there(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _failing(errno.EIO))
    queue, handles = Syncs(), _handles(tmp_path, MAX_PENDING + 1)
    for i, handle in enumerate(handles[:MAX_PENDING]):
        queue.add(handle, tmp_path / f"s{i}.tar")
    with pytest.raises(OSError, match="s0.tar"):
        queue.add(handles[-1], tmp_path / f"s{MAX_PENDING}.tar")
    queue.discard()
    assert not queue.pending and all(h.closed for h in handles[:MAX_PENDING])


def test_a_failed_runs_syncs_do_not_fail_the_next_run(tmp_path, monkeypatch):
    real = os.fsync
    monkeypatch.setattr(os, "fsync", _failing(errno.ENOSPC))
    with pytest.raises(DiskFullError):
        write_toy(tmp_path / "a" / "toy" / "train", n=40, max_samples=5)
    monkeypatch.setattr(os, "fsync", real)
    assert not syncs().pending
    assert write_toy(tmp_path / "b" / "toy" / "train", n=40, max_samples=5)["samples"] == 40


def _child_pending(queue) -> None:
    queue.put(len(syncs().pending))


def test_a_forked_worker_has_its_own_syncs(tmp_path, monkeypatch):
    gate = multiprocessing.get_context("fork").Event()
    monkeypatch.setattr(os, "fsync", lambda fd: gate.wait(10))
    handle, = _handles(tmp_path, 1)
    syncs().add(handle, tmp_path / "s0.tar")  # still in flight in this process
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_pending, args=(queue,))
    child.start()
    got = queue.get(timeout=10)
    child.join()
    gate.set()
    syncs().wait()
    assert got == 0 and child.exitcode == 0 and durable._BY_PROCESS[os.getpid()] is syncs()
