"""Hand a shard task to a worker process with its sample arrays copied once.

Pickled as usual, a task's numpy arrays are copied into the pickle, through the pipe and out again (four
copies on 3.11's default protocol). Here the task is pickled with protocol 5 and its array buffers kept out of
band: they are written once, side by side, into a file in shared memory (``/dev/shm`` where there is one); the
worker maps that file and rebuilds the arrays as read-only views of the mapping (no copy), and only the small
pickle of everything else goes through the pipe. The worker unlinks the file once mapped; the driver removes
the folder at the end, so a killed worker leaves nothing behind.
"""
from __future__ import annotations

import mmap
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from mmdata.shards.task import ShardJob, Task, TaskResult, run_task


def scratch_root() -> str | None:
    """Where handoff folders go: shared memory where the system has it, else the default temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def pack(task: Task, folder: Path) -> tuple[bytes, str, list[int]]:
    """(the task pickled without its array buffers, the file holding those buffers, each buffer's length)."""
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(task, protocol=5, buffer_callback=buffers.append)
    path = folder / f"task-{task.index:06d}-{task.start}"
    views = [buffer.raw() for buffer in buffers]
    with open(path, "wb") as handle:
        for view in views:
            handle.write(view)  # the one copy of the sample arrays
    return meta, str(path), [view.nbytes for view in views]


def unpack(meta: bytes, path: str, sizes: list[int]) -> Task:
    """The task :func:`pack` wrote, its arrays read-only views of the mapped file (which is unlinked here)."""
    total = sum(sizes)
    if not total:
        os.unlink(path)
        return pickle.loads(meta, buffers=[b"" for _ in sizes])
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), total, access=mmap.ACCESS_READ)
    os.unlink(path)
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


def scratch_folder() -> tempfile.TemporaryDirectory:
    """A folder for one write's handoff files (removed with everything in it when the write ends)."""
    return tempfile.TemporaryDirectory(prefix="mmdata-handoff-", dir=scratch_root())


def submit(executor: Any, job: ShardJob, task: Task, folder: Path | None) -> Any:
    """Submit ``task``: packed through ``folder`` for worker processes, as it is inline (``folder`` None)."""
    if folder is None:
        return executor.submit(run_task, job, task)
    return executor.submit(run_packed, job, *pack(task, folder))
