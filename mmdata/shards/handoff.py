"""Hand a shard task to a worker process with its sample arrays copied once.

Pickled as usual, a task's numpy arrays are copied into the pickle, through the pipe and out again (four
copies on 3.11's default protocol). Here the task is pickled with protocol 5 and its array buffers kept out of
band: they are written once, side by side, into a slot file in shared memory (``/dev/shm`` where there is one);
the worker maps that file and rebuilds the arrays as read-only views of the mapping (no copy). The pickle of
everything else follows them in the file, so what goes through the pipe is a few hundred bytes. A field whose
values are arrays of one dtype and shape in every sample of the task skips pickling altogether: its arrays
are written back to back and come back as the rows of one ``[n, ...]`` column. Slot files are reused (rewriting
pages tmpfs already holds costs a third of writing fresh ones): :class:`mmdata.shards.taskpool.TaskPool` gives
each task in flight its own slot, free again once the task's result is back, and removes the folder at the end,
so a killed worker leaves nothing behind.
"""
from __future__ import annotations

import gc
import mmap
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.shards.publish import pid_alive
from mmdata.shards.task import Admitted, ShardJob, Task, TaskResult, run_task

_IOV_MAX = 1024  # buffers per pwritev call (the POSIX minimum of IOV_MAX)


def scratch_root() -> str | None:
    """Where handoff folders go: shared memory where the system has it, else the default temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def scratch_folder(kind: str) -> tempfile.TemporaryDirectory:
    """A new folder ``mmdata-<kind>-<pid>-*`` for this process's hand-over files, under :func:`scratch_root`.

    The folders of processes that are gone are removed first: a writer killed with SIGKILL (or by the OOM killer)
    never removes its own, and in ``/dev/shm`` what it held is memory until the next reboot.
    """
    root = Path(scratch_root() or tempfile.gettempdir())
    for folder in root.glob(f"mmdata-{kind}-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"mmdata-{kind}-{os.getpid()}-", dir=root)


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


#: A field handed over as one column: (name, dtype string, shape of one value, number of samples).
Column = tuple[str, str, tuple[int, ...], int]


def _columns(samples: list[Admitted]) -> tuple[list[Admitted], list[Column], list[list[np.ndarray]]]:
    """Split off the fields whose value is, in every sample, a C-ordered ndarray (ndim >= 1) of one dtype and
    shape: (the samples with None in their place, the columns, per column its arrays in sample order).

    Pickling an array costs a Python-level ``__reduce_ex__`` per value; with columns, handing over AV-MNIST-like
    samples went from 9.5 to 5 us each. A column is rebuilt in the worker as one ``[n, ...]`` array whose rows
    the samples get.
    """
    first = samples[0][1] if samples else {}
    columns, arrays = [], []
    for name, value in first.items():
        if type(value) is not np.ndarray or not value.ndim or value.dtype.hasobject:  # object arrays: pickled
            continue
        values = [sample.get(name) for _, sample, *_ in samples]
        if all(type(v) is np.ndarray and v.dtype == value.dtype and v.shape == value.shape and v.flags.c_contiguous
               for v in values):
            columns.append((name, value.dtype.str, value.shape, len(values)))
            arrays.append(values)
    if not columns:
        return samples, [], []
    names = {name for name, *_ in columns}
    stripped = [(position, {k: None if k in names else v for k, v in sample.items()}, *rest)
                for position, sample, *rest in samples]  # None holds each key's place: the dict order is kept
    return stripped, columns, arrays


def pack(task: Task, path: Path) -> tuple[str, int, list[int], list[Column]]:
    """Write the task into the slot file ``path``: the pickle's own out-of-band buffers, then the columns, then
    the pickle of everything else. Returns (the slot file, the pickle's length, the buffers' lengths, the
    columns): what :func:`unpack` needs, a few hundred bytes whatever the samples hold."""
    samples, columns, arrays = _columns(task.samples)
    buffers: list[pickle.PickleBuffer] = []
    with _no_collection():
        meta = pickle.dumps(replace(task, samples=samples), protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    sizes = [view.nbytes for view in views]
    views += [array for values in arrays for array in values]  # a column's arrays land back to back
    views.append(meta)  # last, so the arrays keep their offsets; in the file, the pipe carries a few bytes only
    write_views(path, views)  # the one copy of the sample arrays
    return str(path), len(meta), sizes, columns


def write_views(path: Path, views: Sequence[Any]) -> None:
    """Write the buffers ``views`` back to back from the start of ``path`` (created if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        offset = 0
        for first in range(0, len(views), _IOV_MAX):
            offset += os.pwritev(fd, views[first:first + _IOV_MAX], offset)
    finally:
        os.close(fd)


def dump(value: Any, path: Path) -> None:
    """``value`` pickled into ``path`` (protocol 5) with its out-of-band buffers written beside the pickle, not
    copied into it: a header (its length in 8 bytes, then the pickle's and every buffer's length), the buffers,
    the pickle. An object that hands its large bytes out as ``PickleBuffer``s (:class:`mmdata.shards.parts.
    Prepared`) then costs one copy into the file."""
    buffers: list[pickle.PickleBuffer] = []
    with _no_collection():
        meta = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    head = pickle.dumps((len(meta), [view.nbytes for view in views]))
    write_views(path, [len(head).to_bytes(8, "little"), head, *views, meta])


def load(path: Path) -> Any:
    """The value :func:`dump` wrote; its out-of-band buffers come back as read-only views of the mapped file
    (no copy; the mapping lives as long as a view of it, so the file may be removed meanwhile)."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        meta_size, sizes = pickle.loads(handle.read(length))
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view, offset, parts = memoryview(mapping), 8 + length, []
    for size in sizes:
        parts.append(view[offset:offset + size])
        offset += size
    with _no_collection():
        return pickle.loads(view[offset:offset + meta_size], buffers=parts)


def unpack(path: str, meta_size: int, sizes: list[int], columns: Sequence[Column] = ()) -> Task:
    """The task :func:`pack` wrote, its arrays read-only views of the mapped slot file."""
    spans = [int(np.dtype(dtype).itemsize * np.prod(shape, dtype=np.int64)) * count
             for _, dtype, shape, count in columns]
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), sum(sizes) + sum(spans) + meta_size, access=mmap.ACCESS_READ)
    view, offset, parts = memoryview(mapping), 0, []
    for size in sizes + spans + [meta_size]:
        parts.append(view[offset:offset + size])
        offset += size
    # The mapping lives as long as an array still views it.
    task = pickle.loads(parts[-1], buffers=parts[:len(sizes)])
    return _restored(task, columns, parts[len(sizes):-1])


def _restored(task: Task, columns: Sequence[Column], data: list[Any]) -> Task:
    """Put each column's rows back into the samples' dicts (read-only views of the column)."""
    for (name, dtype, shape, count), raw in zip(columns, data):
        rows = np.frombuffer(raw, dtype).reshape(count, *shape)
        for (_, sample, *_), row in zip(task.samples, rows):
            sample[name] = row
    return task


def run_packed(job: ShardJob, path: str, meta_size: int, sizes: list[int], columns: list[Column]) -> TaskResult:
    """:func:`mmdata.shards.task.run_task` on a task handed over by :func:`pack` (runs in the worker)."""
    result = run_task(job, unpack(path, meta_size, sizes, columns))
    result.task = None  # type: ignore[assignment]  # the driver has it; sending it back would copy it again
    return result
