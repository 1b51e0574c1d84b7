"""The writing engine's worker processes, each fed through its own pipe by the driver's one thread.

Why not ``concurrent.futures.ProcessPoolExecutor``: its feeder and manager threads need the GIL to hand a task to
a worker or take a result back, and the driver holds the GIL while it writes a shard itself (the driver is one of
the N writing processes, :mod:`mmdata.shards.engine`). A worker then waited for its next task, and the driver for
a result already sent, up to a GIL switch interval (5 ms) at a time: 2 processes wrote 1.3-1.4x as fast as 1
(``bench/write_speed.py``). Here the driver writes each packed task (:mod:`mmdata.shards.handoff`) straight into
a worker's pipe and reads results whenever it looks for them; nothing runs behind its back.

A worker holds at most :data:`DEPTH` tasks (one running, the next already in its pipe), so it never waits for
the driver between two tasks. Each task in flight has its own slot file, reused once its result is back; the task
is in the file, so what goes down the pipe is a few hundred bytes and the driver never blocks sending (a worker
blocked sending a result to a driver blocked sending it a task would be a deadlock). Workers ignore SIGINT (the
driver, in the same process group, gets it and stops them) and die on SIGTERM.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import traceback
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from mmdata.errors import RemoteTraceback, ShardIntegrityError
from mmdata.shards.durable import syncs
from mmdata.shards.handoff import pack, run_packed, scratch_folder
from mmdata.shards.orphans import end_with_parent
from mmdata.shards.task import ShardJob, Task, TaskResult

#: Tasks a worker holds at once: the one it runs and the next, already sent.
DEPTH = 2


def error_reply(error: BaseException) -> bytes:
    """A task's error for the driver, with its cause and the worker's traceback (neither survives pickling)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        reply = pickle.dumps((False, (error, error.__cause__, text)))
        pickle.loads(reply)  # some errors pickle but do not unpickle (an __init__ with other arguments)
        return reply
    except Exception:  # noqa: BLE001 - an error that does not travel is sent as its text
        return pickle.dumps((False, (RuntimeError(f"{type(error).__name__}: {error}"), None, text)))


#: The message asking a worker to wait for its background fsyncs (a task's message is a pickle: never this).
_SYNC = b"sync"


def _serve(conn: Connection, job: ShardJob, parent: int, parent_ends: list[Connection]) -> None:
    """A worker's loop: run each packed task that arrives and send its result or error back; on :data:`_SYNC`,
    wait for the shards it wrote to be on disk and say so; stop at an empty message."""
    end_with_parent(parent, parent_ends)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the driver's handler, inherited by fork
    while message := conn.recv_bytes():
        try:
            value = syncs().wait() if message == _SYNC else run_packed(job, *pickle.loads(message))
            reply = pickle.dumps((True, value))
        except Exception as error:  # noqa: BLE001 - handed to the driver, which raises it in shard order
            reply = error_reply(error)
        conn.send_bytes(reply)


#: Send buffer of a worker's end (capped by the kernel's net.core.wmem_max): a result of a few hundred kB (index
#: rows of a 1000-sample shard) is then written at once, and the worker goes on while the driver writes a shard.
SEND_BUFFER = 4 << 20


def _widen(conn: Connection) -> None:
    """Enlarge the send buffer of ``conn``'s socket (best effort: the default is ~200 kB)."""
    try:
        with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as view:  # a dup of the same socket
            view.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:
        pass


@dataclass
class _Worker:
    process: Any
    conn: Connection
    pending: deque[tuple[Future, Path | None]] = field(default_factory=deque)  # in the order it runs them


class TaskPool:
    """``workers`` forked processes running shard tasks of ``job``; results come back as futures."""

    def __init__(self, job: ShardJob, workers: int) -> None:
        self.folder = scratch_folder("handoff")
        self.free = [Path(self.folder.name) / f"slot-{i}" for i in range(workers * DEPTH)]
        context = multiprocessing.get_context("fork")  # the job (and any patched module) is inherited, not sent
        self.workers: list[_Worker] = []
        for _ in range(workers):
            ours, theirs = context.Pipe()
            _widen(theirs)
            parent_ends = [*(worker.conn for worker in self.workers), ours]  # inherited by the fork
            process = context.Process(target=_serve, args=(theirs, job, os.getpid(), parent_ends), daemon=True)
            process.start()
            theirs.close()
            self.workers.append(_Worker(process, ours))

    def has_room(self) -> bool:
        """Whether some worker holds fewer than :data:`DEPTH` tasks."""
        return any(len(worker.pending) < DEPTH for worker in self.workers)

    def submit(self, task: Task) -> Future:
        """Hand ``task`` to the least busy worker (call only when :meth:`has_room`)."""
        worker = min(self.workers, key=lambda w: len(w.pending))
        slot = self.free.pop()
        try:  # a few hundred bytes (the task is in its slot file): never blocks on a busy worker
            worker.conn.send_bytes(pickle.dumps(pack(task, slot)))
        except OSError as exc:
            raise self._died(worker) from exc
        future: Future = Future()
        worker.pending.append((future, slot))
        return future

    def collect(self, block: bool) -> None:
        """Take in every result that has arrived; with ``block``, wait for one first (if any task is out).

        Raises:
            ShardIntegrityError: a worker died (killed, out of memory) with tasks out.
        """
        busy = [worker for worker in self.workers if worker.pending]
        if not busy:
            return
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], None if block else 0)
        for worker in busy:
            if worker.conn in ready or worker.process.sentinel in ready:
                self._take(worker)

    def _take(self, worker: _Worker) -> None:
        """Read one result of ``worker`` (its pipe is readable or the worker is gone) into its oldest future."""
        try:
            ok, value = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise self._died(worker) from exc
        future, slot = worker.pending.popleft()
        if slot is not None:  # None: a sync request, which holds no slot
            self.free.append(slot)
        if ok:
            future.set_result(value)
            return
        error, cause, text = value
        error.__cause__ = cause if cause is not None else RemoteTraceback(text)
        future.set_exception(error)

    @staticmethod
    def _died(worker: _Worker) -> ShardIntegrityError:
        worker.process.join(1)  # its exit code, when it is gone
        return ShardIntegrityError(f"a shard-writing process died (exit code {worker.process.exitcode}) with "
                                   f"{len(worker.pending)} task(s) out; nothing published")

    def result(self, future: Future) -> TaskResult:
        """The task's result, taking in results until it is there; its error is raised here."""
        while not future.done():
            self.collect(block=True)
        return future.result()

    def sync(self) -> None:
        """Return once every worker's shards are on disk (call with no task out); raise a worker's fsync error."""
        futures: list[Future] = []
        for worker in self.workers:
            worker.conn.send_bytes(_SYNC)
            futures.append(Future())
            worker.pending.append((futures[-1], None))
        for future in futures:
            self.result(future)

    def close(self, failed: bool) -> None:
        """Stop the workers (at once after a failure: SIGKILL) and remove the slot files."""
        stop_workers(self.workers, failed)
        self.folder.cleanup()


def stop_workers(workers: list[Any], failed: bool) -> None:
    """Stop worker processes (each with ``process`` and ``conn``, the driver's pipe end): an empty message asks
    each to stop; after a failure, or for one already gone, SIGKILL. Returns once all are reaped."""
    for worker in workers:
        if failed:
            worker.process.kill()
        else:
            try:
                worker.conn.send_bytes(b"")
            except OSError:  # already gone
                worker.process.kill()
    for worker in workers:
        worker.process.join()
        worker.conn.close()
