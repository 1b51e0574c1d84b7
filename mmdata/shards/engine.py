"""The writing engine: the admitted samples of a split cut into shard tasks, run in one process or several.

A task writes exactly one shard: from a known first sample, it encodes, audits and appends samples until the
shard is full (``max_samples``, or the next sample would pass ``max_bytes``), then closes it (``.partial`` ->
``.tar``). Shard ``k`` therefore starts where shard ``k - 1`` ended, as in a sequential writer, and the output is
byte-identical for any number of processes. The driver (the caller's process) plans where the next tasks start
from sizes known before encoding (:func:`mmdata.shards.codec.encoded_size`: exact for npy, text and source image
bytes) and runs them ahead; a task that ends elsewhere than planned (a compressed image shard cut by bytes)
voids the tasks planned after it, which are waited for, deleted and run again from the true start. Results are
merged in shard order. The same tasks (a start, their samples, a shard number) are what a distributed engine
would schedule. With ``processes=1`` the tasks run inline, one after the other, in the driver.
"""
from __future__ import annotations

import multiprocessing
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import ShardIntegrityError
from mmdata.shards.codec import encode, encoded_size
from mmdata.shards.content import ContentAudit
from mmdata.shards.index import index_label
from mmdata.shards.publish import disk_full_names
from mmdata.shards.tar import ShardSink
from mmdata.types import Features, Sample

#: An admitted sample and its view rows (or None).
Admitted = tuple[Sample, "list[dict[str, Any]] | None"]


@dataclass(frozen=True)
class ShardJob:
    """What every task of a split shares: where and how shards are written (``encoder``: codec.encode)."""

    directory: Path
    prefix: str
    features: Features
    label: str
    max_samples: int
    max_bytes: int
    encoder: Callable[[Any, Any], bytes] = encode


@dataclass
class Task:
    """Write shard ``index`` from the admitted sample at ``start``, taking samples from ``samples`` in order.

    ``final``: no admitted sample follows ``samples``.
    """

    index: int
    start: int
    samples: list[Admitted]
    final: bool


@dataclass
class TaskResult:
    """What a task wrote: the shard record, its index rows and content audit; ``count`` samples taken."""

    task: Task
    count: int
    complete: bool  # the shard was closed by the size rule or the stream's end, not by running out of samples
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    audit: ContentAudit


def _length(value: Any) -> int:
    """Length of the first axis; for image bytes kept as they came, the height read from the header alone."""
    if isinstance(value, (bytes, bytearray)):
        from mmdata.modalities.image import image_shape

        return image_shape(bytes(value))[0]
    return int(np.shape(value)[0])


def index_rows(key: str, shard: str, sample: Sample, features: Features, label: str, payloads: list[bytes],
               offsets: list[int], crcs: list[int], rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Index rows of one stored sample: one row, or one per entry of its ``__rows__`` (a :class:`View`)."""
    base: dict[str, Any] = {"key": key, "sample": key, "shard": shard}
    for name, data, offset, crc in zip(sorted(features), payloads, offsets, crcs):
        base[f"offset_{name}"] = offset
        base[f"size_{name}"] = len(data)
        base[f"crc32_{name}"] = crc
        if features[name].variable_axes:
            base[f"length_{name}"] = _length(sample[name])
    if rows is None:
        return [{**base, "label": index_label(sample[label], features[label])}]
    element = replace(features[label], shape=())  # a View row's label is one element of the stored label
    return [{**base, "key": f"{key}/{row['id']}", "label": index_label(row["label"], element),
             **{k: v for k, v in row.items() if k not in ("id", "label")}} for row in rows]


def run_task(job: ShardJob, task: Task) -> TaskResult:
    """Write one shard (see :class:`Task`); runs in a worker process or inline."""
    import zlib

    names = sorted(job.features)
    sink = ShardSink(job.directory, job.prefix, job.max_samples, job.max_bytes, first=task.index)
    audit, rows, count, cut = ContentAudit(job.features), [], 0, False
    with sink, disk_full_names(lambda: sink.writing() or job.directory):
        for sample, views in task.samples:
            key = sample["__key__"]
            payloads = [job.encoder(sample[name], job.features[name]) for name in names]
            members = [(f"{key}.{name}.{job.features[name].codec}", data) for name, data in zip(names, payloads)]
            if sink.rotates(members):
                cut = True
                break
            shard, offsets = sink.add(key, members)
            audit.add(key, sample, payloads)
            crcs = [zlib.crc32(data) for data in payloads]
            rows += index_rows(key, shard, sample, job.features, job.label, payloads, offsets, crcs, views)
            count += 1
        record = sink.close()[0]
    complete = cut or count == job.max_samples or (task.final and count == len(task.samples))
    return TaskResult(task, count, complete, record, rows, audit)


def merge_audit(into: ContentAudit, part: ContentAudit) -> None:
    """Fold a later task's audit into ``into``, as if one audit had seen both tasks' samples in order."""
    # Uses ContentAudit's internals (first key per digest, groups, flags): a merge method belongs there.
    for digest, first in part._first.items():
        group = part._groups.get(digest, [first])
        if digest not in into._first:
            into._first[digest] = first
            if len(group) > 1:
                into._groups[digest] = list(group)
        else:
            into._groups.setdefault(digest, [into._first[digest]]).extend(group)
    into._flags.update(part._flags)


def planned_count(samples: list[Admitted], job: ShardJob) -> tuple[int, bool]:
    """How many of ``samples`` the task's shard will take, and whether that is known (all sizes known)."""
    names, offset = sorted(job.features), 0
    for i, (sample, _) in enumerate(samples[:job.max_samples]):
        sizes = [encoded_size(sample[name], job.features[name]) for name in names]
        if None in sizes:
            return min(len(samples), job.max_samples), False
        if i and offset + sum(size + 1024 for size in sizes) > job.max_bytes:
            return i, True
        offset += sum(512 + size + -size % 512 for size in sizes)
    return min(len(samples), job.max_samples), True


class _Inline:
    """An executor that runs each task at submit, in this process (``processes=1``)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver, which re-raises it
            future.set_exception(exc)
        return future

    def shutdown(self, **kwargs: Any) -> None:
        pass


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
    if processes == 1:
        return _Inline()
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"))


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


def write_shards(admitted: Iterator[Admitted], job: ShardJob, processes: int = 1
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], ContentAudit]:
    """Write the admitted samples as shards with ``processes`` processes.

    Returns:
        The shard records (name, samples, bytes, sha256, first/last key, keys) in order, the index rows in
        order, and the merged content audit.

    Raises:
        ShardIntegrityError: a worker process died (killed, out of memory); any task's error is re-raised.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    executor, failed = _executor(processes), True
    try:
        written = _drive(executor, _Buffer(admitted), job, processes + 1 if processes > 1 else 1)
        failed = False
        return written
    except BrokenProcessPool as exc:
        raise ShardIntegrityError(f"{job.directory}: a shard-writing process died ({exc}); nothing published") from exc
    finally:
        _stop(executor, failed)


def _drive(executor: Any, buffer: _Buffer, job: ShardJob, ahead: int
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], ContentAudit]:
    """Plan, run and merge tasks in shard order (see the module docstring); ``ahead`` tasks in flight at most."""
    records, rows, audit = [], [], ContentAudit(job.features)
    flight: deque[tuple[Task, Future]] = deque()
    start, plan, unknown = 0, 0, False  # start: the true next start; plan: the next planned one
    while True:
        while len(flight) < ahead:
            samples, final = buffer.window(plan, job.max_samples)
            if not samples:
                break
            count, known = planned_count(samples, job)
            # A known plan takes one sample more when cut by bytes, so the task sees the cut itself.
            take = samples if unknown or not known else samples[:count + 1]
            final = final and len(take) == len(samples)
            task = Task(len(records) + len(flight), plan, take, final)
            flight.append((task, executor.submit(run_task, job, task)))
            plan, unknown = plan + count, False
        if not flight:
            return records, rows, audit
        task, future = flight.popleft()
        result = future.result()
        if task.start != start or not result.complete:
            _void(job, result, flight)  # a task planned from a wrong start, or one short of samples
            plan, unknown = start, not result.complete
            continue
        records.append(result.record)
        rows += result.rows
        merge_audit(audit, result.audit)
        start += result.count
        buffer.drop(start)
        if not flight:
            plan = start


def _void(job: ShardJob, result: TaskResult, flight: deque[tuple[Task, Future]]) -> None:
    """Delete a voided task's shard and those of every task in flight after it (waited for first)."""
    voided = [result] + [future.result() for _, future in flight]
    flight.clear()
    for item in voided:
        (job.directory / item.record["name"]).unlink(missing_ok=True)
