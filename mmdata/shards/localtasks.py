"""This machine's processes as the task backend of :class:`~mmdata.shards.parted.PartedSplit`.

With ``processes`` > 1 and a source that tasks can read in parts, the local engine writes a split the way the
Ray engine does (:mod:`mmdata.shards.parted`): each worker reads, checks and encodes its own parts of the raw
files, so the driver (one process for the whole split in :mod:`mmdata.shards.engine`) no longer reads and hands
over every sample. What Ray's object store does is done by files in shared memory (``/dev/shm`` where there is
one): a task's results are pickled into its own files by the worker that ran it, a later task's reference
argument is read from its file by whichever worker runs that task, and a file is removed once the driver holds
no reference to it (its :class:`Ref` is garbage) and no task that takes it is out. Workers are forked at the
first task, after the job was put, so the job (with whatever encoder the caller set) is inherited, not sent.

What goes through a worker's pipe is a few hundred bytes per task (the task is in its own file too), so the
driver never blocks sending. A task's error is raised by :meth:`LocalTasks.get` as itself, its cause or the
worker's traceback attached (:class:`mmdata.RemoteTraceback`); a worker that dies (killed, out of memory)
fails the run with a ShardIntegrityError (no retry: a local process killed is the machine's doing, not chance).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import signal
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from mmdata.corpora.base import Skip
from mmdata.errors import RemoteTraceback, ShardIntegrityError
from mmdata.shards.durable import syncs
from mmdata.shards.engine import Admitted, ShardJob, Written
from mmdata.shards.handoff import dump, load, scratch_folder
from mmdata.shards.orphans import end_with_parent
from mmdata.shards.parted import PartedSplit, SplitSource
from mmdata.shards.taskpool import error_reply, stop_workers
from mmdata.types import Sample


@dataclass(frozen=True, eq=False)
class Ref:
    """A value put by the driver (``path`` None: looked up in :attr:`LocalTasks.values`, inherited by fork) or a
    task's result (the file at ``path``, once task ``task`` is done)."""

    key: int
    path: Path | None = None
    task: int = -1


def _serve(conn: Connection, values: dict[int, Any], parent: int, parent_ends: list[Connection]) -> None:
    """A worker's loop: run each task file named by a message, its results into their files, and answer
    ``(task, None)`` or ``(task, error reply)``; stop at an empty message."""
    end_with_parent(parent, parent_ends)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver, in the same process group, gets Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while message := _next(conn):
        task, path, outs = pickle.loads(message)
        try:
            function, args = load(path)
            value = function(*[_resolve(arg, values) for arg in args])
            for out, item in zip(outs, value if len(outs) > 1 else (value,)):
                dump(item, out)
            reply = pickle.dumps((task, None))
        except Exception as error:  # noqa: BLE001 - handed to the driver, which raises it where it is fetched
            reply = pickle.dumps((task, error_reply(error)))
        conn.send_bytes(reply)


def _next(conn: Connection) -> bytes:
    """The driver's next message; empty (stop) when the driver is gone (killed: its end of the pipe closed)."""
    try:
        return conn.recv_bytes()
    except (EOFError, OSError):
        return b""


def _wait_syncs() -> None:
    """In a worker: return once the shards it wrote are on disk (:mod:`mmdata.shards.durable`)."""
    syncs().wait()


def _resolve(arg: Any, values: dict[int, Any]) -> Any:
    if not isinstance(arg, Ref):
        return arg
    return values[arg.key] if arg.path is None else load(arg.path)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    out: set[int] = field(default_factory=set)  # its tasks not answered yet


class LocalTasks:
    """``processes`` forked workers running task functions; results kept in shared-memory files (see the module
    docstring). Close with :meth:`close` (after a failure, :meth:`cancel` kills the workers)."""

    #: Shard-writing tasks leave their fsyncs to background threads of the worker (as the driver engine's
    #: workers do), so a worker encodes the next shard meanwhile; :meth:`sync` waits for them.
    background_sync = True

    def __init__(self, processes: int) -> None:
        self.cpus = processes
        self.values: dict[int, Any] = {}  # what the driver put, inherited by the workers
        self.keys = itertools.count()
        self.folder = scratch_folder("parts")
        self.workers: list[_Worker] = []
        self.done: dict[int, BaseException | None] = {}  # finished task -> its error (None: ok)
        self.holding: dict[int, list[Ref]] = {}  # task out -> the refs it reads (kept alive until it is done)

    def put(self, value: Any) -> Ref:
        if self.workers:
            raise RuntimeError("LocalTasks.put after the workers started: they would not see the value")
        ref = Ref(next(self.keys))
        self.values[ref.key] = value
        return ref

    def submit(self, function: Callable[..., Any], *args: Any, returns: int = 1) -> Ref | tuple[Ref, ...]:
        if not self.workers:
            self._start()
        return self._send(min(self.workers, key=lambda w: len(w.out)), function, args, returns)

    def _send(self, worker: _Worker, function: Callable[..., Any], args: tuple, returns: int
              ) -> Ref | tuple[Ref, ...]:
        task = next(self.keys)
        refs = tuple(self._result(task, i) for i in range(returns))
        inputs = [arg for arg in args if isinstance(arg, Ref)]
        for ref in inputs:
            if ref.path is not None:
                self._wait(ref.task)  # its file is written: the task may run on any worker
        path = Path(self.folder.name, f"task-{task}")
        dump((function, args), path)
        try:  # a few hundred bytes: never blocks on a busy worker
            worker.conn.send_bytes(pickle.dumps((task, path, [ref.path for ref in refs])))
        except OSError as exc:
            raise self._died(worker) from exc
        worker.out.add(task)
        self.holding[task] = inputs
        return refs if returns > 1 else refs[0]

    def sync(self) -> None:
        """Wait for every worker's background fsyncs (their shards on disk); raise a failed one's error."""
        for ref in [self._send(worker, _wait_syncs, (), 1) for worker in self.workers]:
            self.get(ref, "sync")

    def _result(self, task: int, i: int) -> Ref:
        """A reference to result ``i`` of ``task``, whose file is removed when the reference is garbage."""
        ref = Ref(next(self.keys), Path(self.folder.name, f"result-{task}-{i}"), task)
        weakref.finalize(ref, _remove, ref.path)
        return ref

    def get(self, ref: Ref, what: str) -> Any:
        if ref.path is None:
            return self.values[ref.key]
        self._wait(ref.task)
        error = self.done[ref.task]
        if error is not None:
            raise error
        return load(ref.path)

    def _wait(self, task: int) -> None:
        """Take in answers until ``task``'s has come."""
        while task not in self.done:
            busy = [worker for worker in self.workers if worker.out]
            if not busy:  # never expected: a reference to a task this backend did not run
                raise RuntimeError(f"task {task} is neither done nor out")
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._take(worker)

    def _take(self, worker: _Worker) -> None:
        try:
            task, failure = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise self._died(worker) from exc
        worker.out.discard(task)
        del self.holding[task]
        _remove(Path(self.folder.name, f"task-{task}"))
        if failure is None:
            self.done[task] = None
            return
        error, cause, text = pickle.loads(failure)[1]
        error.__cause__ = cause if cause is not None else RemoteTraceback(text)
        self.done[task] = error

    @staticmethod
    def _died(worker: _Worker) -> ShardIntegrityError:
        worker.process.join(1)  # its exit code, when it is gone
        return ShardIntegrityError(f"a shard-writing process died (exit code {worker.process.exitcode}) with "
                                   f"{len(worker.out)} task(s) out; nothing published")

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")  # the put values (the job) are inherited, not sent
        for _ in range(self.cpus):
            ours, theirs = context.Pipe()
            parent_ends = [*(worker.conn for worker in self.workers), ours]  # inherited by the fork
            process = context.Process(target=_serve, args=(theirs, self.values, os.getpid(), parent_ends),
                                      daemon=True)
            process.start()
            theirs.close()
            self.workers.append(_Worker(process, ours))

    def cancel(self, refs: list[Any]) -> None:
        """Kill every worker (what they were writing goes with the temporary output) and wait for them."""
        self.close(failed=True)

    def close(self, failed: bool = False) -> None:
        """Stop the workers (at once after a failure: SIGKILL) and remove every file."""
        stop_workers(self.workers, failed)
        self.workers.clear()
        self.folder.cleanup()


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:  # the task never wrote it (it failed), or the folder is gone
        pass


class LocalSplit(PartedSplit):
    """A split written by this machine's processes in the two phases of :mod:`mmdata.shards.parted`; the workers
    stop when :meth:`write` returns or fails."""

    def __init__(self, processes: int, source: SplitSource | Iterable[Sample | Skip], part_size: int) -> None:
        super().__init__(LocalTasks(processes), source, part_size)

    def write(self, admitted: Iterator[Admitted], job: ShardJob) -> Written:
        try:
            return super().write(admitted, job)
        finally:
            self.tasks.close()
