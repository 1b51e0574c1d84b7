"""The writing engine: the admitted samples of a split cut into shard tasks, run in one process or several.

A task (:mod:`mmdata.shards.task`) writes exactly one shard: from a known first sample it checks, encodes,
audits and appends samples until the shard is full (``max_samples`` written, or the next sample would pass
``max_bytes``), then closes it (``.partial`` -> ``.tar``); a sample failing its schema check is a skip the task
records. Shard ``k`` therefore starts where shard ``k - 1`` ended, as in a sequential writer, and the output is
byte-identical for any number of processes. The driver (the caller's process) only admits samples (key pattern,
name length, duplicate keys: :mod:`mmdata.shards.write`), plans where the next tasks start from sizes known
before encoding (:func:`mmdata.shards.codec.encoded_size`: exact for npy, text and source image bytes) and the
samples known to fail, and runs them ahead. A task that ends elsewhere than planned (a compressed image shard cut
by bytes, a sample that failed its check) voids the tasks planned after it, which are waited for, deleted and run
again from the true start; one that ran out of samples before its shard was full is run again with more. Results
are merged in shard order; skips carry their raw position, so the merged skip list is in source order. With
``processes=1`` the tasks run inline, one after the other, in the driver. With ``processes=N`` there are N - 1
worker processes and the driver is the N-th: whenever the oldest task in flight is still running it runs the next
task itself instead of waiting (a task it runs itself is not pickled and copied to a worker; N workers and a
waiting driver would put N + 1 busy processes on N cores). The distributed engine
(:mod:`mmdata.shards.ray_engine`) writes the same bytes from Ray tasks that also read and encode the source.
"""
from __future__ import annotations

import multiprocessing
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from mmdata.corpora.base import Skip
from mmdata.errors import ShardIntegrityError
from mmdata.shards.codec import encoded_size
from mmdata.shards.content import ContentAudit
from mmdata.shards.handoff import Handoff, submit
from mmdata.shards.task import Admitted, ShardJob, Task, TaskResult, run_task

__all__ = ["Admitted", "ShardJob", "Task", "TaskResult", "Written", "planned_count", "run_task", "write_shards"]


@dataclass
class Written:
    """What the tasks of a split wrote, merged in shard order: shard records (name, samples, bytes, sha256,
    first/last key, keys), index rows, content audit, skips of failed checks (raw position, Skip; in source
    order) and the repairs of the written samples."""

    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    audit: ContentAudit
    skips: list[tuple[int, Skip]] = field(default_factory=list)
    repairs: Counter = field(default_factory=Counter)

    def add(self, result: TaskResult) -> None:
        if result.record is not None:
            self.records.append(result.record)
        self.rows += result.rows
        self.audit.merge(result.audit)
        self.skips += result.skips
        self.repairs.update(result.repairs)


def planned_count(samples: list[Admitted], job: ShardJob, start: int = 0, failed: frozenset | set = frozenset()
                  ) -> tuple[int, int, bool]:
    """Where the task's shard, from admitted sample ``start``, will end: (samples it goes through, samples to give
    it, whether that is known). ``failed``: admitted numbers known to fail their checks (skipped, no room taken).

    A shard cut by bytes is given its first sample that does not fit, so the task sees the cut itself; with a
    size unknown before encoding the task is given every sample and the count is a guess by ``max_samples``.
    """
    names, offset, written, known, cut = sorted(job.features), 0, 0, True, None
    for i, (_, sample, *_) in enumerate(samples):
        if start + i in failed:
            continue
        if written == job.max_samples:
            return (i, i, True) if known else (i, len(samples), False)
        sizes = [encoded_size(sample[name], job.features[name]) for name in names] if known else []
        known = known and None not in sizes
        if known and written and offset + sum(size + 1024 for size in sizes) > job.max_bytes:
            cut = i
            break
        if known:
            offset += sum(512 + size + -size % 512 for size in sizes)
        written += 1
    if cut is not None:
        return cut, cut + 1, True
    return len(samples), len(samples), known


class _Inline:
    """An executor that runs each task at submit, in this process (``processes=1``, and the tasks the driver
    runs itself beside its workers)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which re-raises it in shard order
            future.set_exception(exc)
        return future  # an interrupt (Ctrl-C, SIGTERM as Interrupted) is not held back: it stops the run now

    def shutdown(self, **kwargs: Any) -> None:
        pass


#: Runs the tasks the driver takes on itself beside its worker processes.
_HERE = _Inline()


class _Buffer:
    """The admitted stream from the first uncommitted sample on, pulled lazily."""

    def __init__(self, admitted: Iterator[Admitted]) -> None:
        self.stream, self.items, self.base, self.ended = admitted, [], 0, False

    def window(self, start: int, count: int) -> tuple[list[Admitted], bool]:
        """Samples ``start .. start + count - 1`` (fewer at the end) and whether the stream ends after them."""
        while not self.ended and len(self.items) < start - self.base + count + 1:
            try:
                self.items.append(next(self.stream))
            except StopIteration:
                self.ended = True
        window = self.items[start - self.base:start - self.base + count]
        return window, self.ended and start - self.base + len(window) == len(self.items)

    def drop(self, upto: int) -> None:
        del self.items[:upto - self.base]
        self.base = upto


def _executor(processes: int) -> Any:
    """Where tasks go: inline for 1 process, else ``processes - 1`` workers (the driver is the last process)."""
    if processes == 1:
        return _Inline()
    return ProcessPoolExecutor(processes - 1, mp_context=multiprocessing.get_context("fork"))


def _stop(executor: Any, failed: bool) -> None:
    """Shut the workers down; after a failure kill them at once (nothing is published; no worker outlives it)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if not failed:
        executor.shutdown(wait=True)
        return
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()  # SIGKILL: a worker would turn SIGTERM into Interrupted and wait for more work
    for process in processes:
        process.join()


def write_shards(admitted: Iterator[Admitted], job: ShardJob, processes: int = 1) -> Written:
    """Write the admitted samples (in source order) as shards with ``processes`` processes.

    Raises:
        ShardIntegrityError: a worker process died (killed, out of memory); any task's error is re-raised.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    executor, failed = _executor(processes), True
    ahead = processes if processes > 1 else 1  # tasks handed to the processes - 1 workers: one each, one queued
    handoff = Handoff(ahead + 1) if processes > 1 else None
    try:
        written = _drive(executor, _Buffer(admitted), job, ahead, handoff)
        failed = False
        return written
    except BrokenProcessPool as exc:
        raise ShardIntegrityError(f"{job.directory}: a shard-writing process died ({exc}); nothing published") from exc
    finally:
        _stop(executor, failed)
        if handoff is not None:
            handoff.close()


def _window(buffer: _Buffer, plan: int, job: ShardJob, failed: set[int]) -> tuple[list[Admitted], bool]:
    """The samples a task from ``plan`` may need: ``max_samples`` plus as many as are known to fail among them."""
    size = job.max_samples
    while True:
        samples, final = buffer.window(plan, size)
        need = job.max_samples + sum(1 for n in range(plan, plan + len(samples)) if n in failed) if failed else size
        if final or len(samples) < size or need <= size:
            return samples, final
        size = need


def _drive(executor: Any, buffer: _Buffer, job: ShardJob, ahead: int, handoff: Handoff | None) -> Written:
    """Plan, run and merge tasks in shard order (see the module docstring); ``ahead`` tasks handed to the
    executor at most (the handoff's slot reuse relies on it) and, with worker processes, one run by the driver
    itself while they work (:func:`_where`); ``handoff``: how tasks reach worker processes, None inline."""
    written = Written([], [], ContentAudit(job.features))
    flight: deque[tuple[Task, Future, bool]] = deque()  # in shard order: task, its result, run by the driver
    failed: set[int] = set()  # admitted numbers known to fail their checks (a check's verdict never changes)
    start, plan, unknown = 0, 0, False  # start: the true next start; plan: the next planned one
    while True:
        while (here := _where(flight, ahead, handoff)) is not None:
            task, count = _next_task(buffer, job, plan, failed, unknown, len(written.records) + len(flight))
            if task is None:
                break
            future = _HERE.submit(run_task, job, task) if here else submit(executor, job, task, handoff)
            flight.append((task, future, here))
            plan, unknown = plan + count, False
        if not flight:
            return written
        task, future, _ = flight.popleft()
        result = future.result()
        failed.update(result.failed)
        if task.start != start or not result.complete:
            failed.update(_void(job, result, flight))  # planned from a wrong start, or short of samples
            plan, unknown = start, not result.complete
            continue
        written.add(result)
        start += result.count
        buffer.drop(start)
        if not flight:
            plan = start


def _where(flight: deque[tuple[Task, Future, bool]], ahead: int, handoff: Handoff | None) -> bool | None:
    """Where the next task runs: False to the executor (fewer than ``ahead`` there), True in the driver (worker
    processes, the oldest task still running, none run here waiting to be merged), None: wait.

    One task of the driver's at a time keeps it free to feed the workers: with two (or three) the 2-process
    speedup measured 1.20x (1.15x) against 1.27x with one (bench/write_speed.py, 12k AV-MNIST-like samples)."""
    here = sum(1 for *_, local in flight if local)
    if len(flight) - here < ahead:
        return False
    if handoff is not None and not here and not flight[0][1].done():
        return True
    return None


def _next_task(buffer: _Buffer, job: ShardJob, plan: int, failed: set[int], unknown: bool, index: int
               ) -> tuple[Task | None, int]:
    """The task writing shard ``index`` from admitted sample ``plan`` and the samples it is planned to go
    through; (None, 0) at the end of the stream. ``unknown``: the last task fell short, give this one every
    sample of its window."""
    samples, final = _window(buffer, plan, job, failed)
    if not samples:
        return None, 0
    count, take, _ = planned_count(samples, job, plan, failed)
    take = len(samples) if unknown else take
    return Task(index, plan, samples[:take], final and take == len(samples)), count


def _void(job: ShardJob, result: TaskResult, flight: deque[tuple[Task, Future, bool]]) -> list[int]:
    """Delete a voided task's shard and those of every task in flight after it (waited for first); return the
    samples they found failing (still true, whatever their start)."""
    voided = [result] + [future.result() for _, future, _ in flight]
    flight.clear()
    for item in voided:
        if item.record is not None:
            (job.directory / item.record["name"]).unlink(missing_ok=True)
    return [number for item in voided for number in item.failed]
