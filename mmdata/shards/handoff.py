"""Hand a shard task to a worker process with its sample arrays copied once.

Pickled as usual, a task's numpy arrays are copied into the pickle, through the pipe and out again (four
copies on 3.11's default protocol). Here the task is pickled with protocol 5 and its array buffers kept out of
band: they are written once, side by side, into a slot file in shared memory (``/dev/shm`` where there is one);
the worker maps that file and rebuilds the arrays as read-only views of the mapping (no copy), and only the small
pickle of everything else goes through the pipe. Slot files are reused round-robin (rewriting pages tmpfs already
holds costs a third of writing fresh ones): with at most ``ahead`` tasks in flight, submission ``n`` may reuse the
slot of submission ``n - ahead - 1``, whose result the driver has already taken. The driver removes the folder at
the end, so a killed worker leaves nothing behind.
"""
from __future__ import annotations

import gc
import mmap
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmdata.shards.task import ShardJob, Task, TaskResult, run_task

_IOV_MAX = 1024  # buffers per pwritev call (the POSIX minimum of IOV_MAX)


def scratch_root() -> str | None:
    """Where handoff folders go: shared memory where the system has it, else the default temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextmanager
def _no_collection() -> Iterator[None]:
    """The cyclic garbage collector paused for the block. Pickling a task allocates thousands of small tuples
    (none in a cycle); the collections they trigger walk the driver's whole heap, which made up a fifth of the
    driver's time with 12k samples in memory (bench/write_speed.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def pack(task: Task, path: Path) -> tuple[bytes, str, list[int]]:
    """(the task pickled without its array buffers, the slot file now holding those buffers, their lengths)."""
    buffers: list[pickle.PickleBuffer] = []
    with _no_collection():
        meta = pickle.dumps(task, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        offset = 0
        for first in range(0, len(views), _IOV_MAX):  # the one copy of the sample arrays
            offset += os.pwritev(fd, views[first:first + _IOV_MAX], offset)
    finally:
        os.close(fd)
    return meta, str(path), [view.nbytes for view in views]


def unpack(meta: bytes, path: str, sizes: list[int]) -> Task:
    """The task :func:`pack` wrote, its arrays read-only views of the mapped slot file."""
    total = sum(sizes)
    if not total:
        return pickle.loads(meta, buffers=[b"" for _ in sizes])
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), total, access=mmap.ACCESS_READ)
    view, offset, parts = memoryview(mapping), 0, []
    for size in sizes:
        parts.append(view[offset:offset + size])
        offset += size
    return pickle.loads(meta, buffers=parts)  # the mapping lives as long as an array still views it


def run_packed(job: ShardJob, meta: bytes, path: str, sizes: list[int]) -> TaskResult:
    """:func:`mmdata.shards.task.run_task` on a task handed over by :func:`pack` (runs in the worker)."""
    result = run_task(job, unpack(meta, path, sizes))
    result.task = None  # type: ignore[assignment]  # the driver has it; sending it back would copy it again
    return result


class Handoff:
    """Submits tasks to worker processes through ``slots`` reused slot files in a scratch folder."""

    def __init__(self, slots: int) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="mmdata-handoff-", dir=scratch_root())
        self.slots, self.count = slots, 0

    def submit(self, executor: Any, job: ShardJob, task: Task) -> Any:
        path = Path(self.folder.name) / f"slot-{self.count % self.slots}"
        self.count += 1
        return executor.submit(run_packed, job, *pack(task, path))

    def close(self) -> None:
        self.folder.cleanup()


def submit(executor: Any, job: ShardJob, task: Task, handoff: Handoff | None) -> Any:
    """Submit ``task``: through ``handoff`` for worker processes, as it is inline (``handoff`` None)."""
    if handoff is None:
        return executor.submit(run_task, job, task)
    return handoff.submit(executor, job, task)
