"""Closed shards made durable in the background: the fsync off the writing process's path, waited for before
anything is published.

Why: an inline fsync of a closed shard idles the writing process until the disk has the bytes (about 3 ms for a
4 MB shard here: 14% of a 1-process write of 12k AV-MNIST-like samples, ``bench/write_speed.py``). Here a thread
per closed shard fsyncs and closes it while the process encodes the next one. The writing engine waits for all of
them, its workers' included (:meth:`mmdata.shards.taskpool.TaskPool.sync`), before the index and the manifest
are written, so a published split still never holds a shard that is not on disk. A failed fsync is raised at that
wait (or when a later shard's sync is queued behind it), naming the shard; ENOSPC as a :class:`DiskFullError`.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO

from mmdata.shards.publish import disk_full_names

#: Syncs in flight per process; one more waits for the oldest (the disk is the limit, not the thread count).
MAX_PENDING = 4


def _sync_close(handle: BinaryIO, errors: list[OSError]) -> None:
    try:
        os.fsync(handle.fileno())
    except OSError as exc:
        errors.append(exc)
    finally:
        try:
            handle.close()
        except OSError as exc:  # the data were flushed before: a close error is a writeback error too
            errors.append(exc)


class Syncs:
    """The background syncs of one process (see the module docstring)."""

    def __init__(self) -> None:
        self.pending: deque[tuple[Path, threading.Thread, list[OSError]]] = deque()

    def add(self, handle: BinaryIO, path: Path) -> None:
        """fsync and close ``handle`` (its buffer already flushed; the file now at ``path``) in the background."""
        if len(self.pending) >= MAX_PENDING:
            self._finish(*self.pending.popleft())
        errors: list[OSError] = []
        thread = threading.Thread(target=_sync_close, args=(handle, errors), name=f"fsync {path.name}", daemon=True)
        thread.start()
        self.pending.append((path, thread, errors))

    def wait(self) -> None:
        """Return once every shard handed over is on disk; raise the first failure, naming its shard."""
        while self.pending:
            self._finish(*self.pending.popleft())

    def discard(self) -> None:
        """Wait for the syncs in flight and drop their errors (after a failed run: nothing will be published)."""
        while self.pending:
            self.pending.popleft()[1].join()

    @staticmethod
    def _finish(path: Path, thread: threading.Thread, errors: list[OSError]) -> None:
        thread.join()
        if errors:
            with disk_full_names(lambda: path):
                raise OSError(errors[0].errno, f"{path}: fsync failed: {errors[0].strerror}") from errors[0]


_BY_PROCESS: dict[int, Syncs] = {}


def syncs() -> Syncs:
    """This process's :class:`Syncs` (a forked worker gets its own, not its parent's)."""
    return _BY_PROCESS.setdefault(os.getpid(), Syncs())
