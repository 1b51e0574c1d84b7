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
worker processes (:mod:`mmdata.shards.taskpool`) and the driver is the N-th: whenever every worker holds its
tasks and the oldest task in flight is still running, it runs the next task itself instead of waiting (a task it
runs itself is not pickled and copied to a worker; N workers and a waiting driver would put N + 1 busy processes
on N cores). The distributed engine
(:mod:`mmdata.shards.ray_engine`) writes the same bytes from Ray tasks that also read and encode the source.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from mmdata.corpora.base import Skip
from mmdata.shards.codec import encoded_size
from mmdata.shards.content import ContentAudit
from mmdata.shards.durable import syncs
from mmdata.shards.task import Admitted, ShardJob, Task, TaskResult, run_task
from mmdata.shards.taskpool import TaskPool

#: Tasks in flight (planned, not yet merged) per process: bounds the samples held in memory while one shard is slow.
FLIGHT = 3

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
    fields = [(name, job.features[name]) for name in sorted(job.features)]
    offset, written, known, cut = 0, 0, True, None
    for i, (_, sample, *_) in enumerate(samples):
        if start + i in failed:
            continue
        if written == job.max_samples:
            return (i, i, True) if known else (i, len(samples), False)
        room = padded = 0  # the sample's room as ShardSink.rotates counts it, and its bytes in the tar
        for name, feature in fields if known else ():  # one loop, no per-sample lists: the driver plans every sample
            size = encoded_size(sample[name], feature)
            if size is None:
                known = False
                break
            room += size + 1024
            padded += 512 + size + -size % 512
        if known and written and offset + room > job.max_bytes:
            cut = i
            break
        if known:
            offset += padded
        written += 1
    if cut is not None:
        return cut, cut + 1, True
    return len(samples), len(samples), known


def _run_here(job: ShardJob, task: Task) -> Future:
    """Run ``task`` in this process now; its result (or error, raised when it is merged) as a done future."""
    future: Future = Future()
    try:
        future.set_result(run_task(job, task))
    except Exception as exc:  # noqa: BLE001 - handed to the driver, which re-raises it in shard order
        future.set_exception(exc)
    return future  # an interrupt (Ctrl-C, SIGTERM as Interrupted) is not held back: it stops the run now


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


def write_shards(admitted: Iterator[Admitted], job: ShardJob, processes: int = 1) -> Written:
    """Write the admitted samples (in source order) as shards with ``processes`` processes.

    Each process fsyncs its closed shards in the background (:mod:`mmdata.shards.durable`); this returns once
    all of them are on disk.

    Raises:
        ShardIntegrityError: a worker process died (killed, out of memory); any task's error is re-raised.
        DiskFullError: a shard's fsync found the disk full (it names the shard).
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    pool, failed = (TaskPool(job, processes - 1) if processes > 1 else None), True
    try:
        written = _drive(pool, _Buffer(admitted), job, FLIGHT * processes)
        if pool is not None:
            pool.sync()
        syncs().wait()  # every shard on disk before the caller writes the index and the manifest
        failed = False
        return written
    finally:
        if failed:
            syncs().discard()
        if pool is not None:
            pool.close(failed)


def _window(buffer: _Buffer, plan: int, job: ShardJob, failed: set[int]) -> tuple[list[Admitted], bool]:
    """The samples a task from ``plan`` may need: ``max_samples`` plus as many as are known to fail among them."""
    size = job.max_samples
    while True:
        samples, final = buffer.window(plan, size)
        need = job.max_samples + sum(1 for n in range(plan, plan + len(samples)) if n in failed) if failed else size
        if final or len(samples) < size or need <= size:
            return samples, final
        size = need


def _drive(pool: TaskPool | None, buffer: _Buffer, job: ShardJob, limit: int) -> Written:
    """Plan, run and merge tasks in shard order (see the module docstring), at most ``limit`` in flight.

    Each turn does the first of: merge the oldest task if it is done; plan the next task and hand it to a worker
    with room, or else run it here; wait for the oldest. So the driver writes a shard itself only while every
    worker holds :data:`mmdata.shards.taskpool.DEPTH` tasks, and takes results in between its own shards."""
    written = Written([], [], ContentAudit(job.features))
    flight: deque[tuple[Task, Future]] = deque()  # in shard order
    failed: set[int] = set()  # admitted numbers known to fail their checks (a check's verdict never changes)
    start, plan, unknown = 0, 0, False  # start: the true next start; plan: the next planned one
    while True:
        if pool is not None:
            pool.collect(block=False)
        if flight and flight[0][1].done():
            task, future = flight.popleft()
            result = future.result()
            failed.update(result.failed)
            if task.start != start or not result.complete:
                failed.update(_void(job, result, flight, pool))  # planned from a wrong start, or short of samples
                plan, unknown = start, not result.complete
                continue
            written.add(result)
            start += result.count
            buffer.drop(start)
            if not flight:
                plan = start
            continue
        if len(flight) < limit:
            task, count = _next_task(buffer, job, plan, failed, unknown, len(written.records) + len(flight))
            if task is not None:
                here = pool is None or not pool.has_room()
                flight.append((task, _run_here(job, task) if here else pool.submit(task)))
                plan, unknown = plan + count, False
                continue
        if not flight:
            return written
        pool.result(flight[0][1])  # only tasks out with workers can be not done


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


def _void(job: ShardJob, result: TaskResult, flight: deque[tuple[Task, Future]], pool: TaskPool | None
          ) -> list[int]:
    """Delete a voided task's shard and those of every task in flight after it (waited for first); return the
    samples they found failing (still true, whatever their start)."""
    voided = [result] + [pool.result(future) if pool is not None else future.result() for _, future in flight]
    flight.clear()
    for item in voided:
        if item.record is not None:
            (job.directory / item.record["name"]).unlink(missing_ok=True)
    return [number for item in voided for number in item.failed]
