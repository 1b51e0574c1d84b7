"""Shard writing in two phases of tasks on any task backend: the partition a distributed engine uses.

A split is written in two kinds of task (:mod:`mmdata.shards.parts`), run by a :class:`Tasks` backend (Ray's
workers, :mod:`mmdata.shards.ray_engine`, or this machine's processes, :mod:`mmdata.shards.localtasks`):

1. The source is cut into contiguous parts of ``max_samples`` raw items (shard-sized). A corpus with
   ``iter_part`` (and ``count_raw``, which enumerates its raw items cheaply) has each part read by its own task
   (every registered corpus but the stocks); the others, and a ``count_raw`` of index rows (the stock windows),
   are read by the driver and their parts shipped to the tasks (the fallback: the same bytes, the reading is
   not spread). Each task checks and encodes its samples as a local shard task does and returns, per
   raw item, a small record (key, source, repairs, exact payload sizes, the check's verdict) while the encoded
   samples stay with the backend (Ray's object store, or a shared-memory file) until phase 2.
2. The driver admits the records in source order exactly as the local engine does (key pattern, name length,
   duplicate keys: :mod:`mmdata.shards.write`), takes the failed checks as skips, and plans where every shard
   ends from the exact payload sizes (the tar sink's rule, no guess: every payload is already encoded). Each
   shard is then written by one task under the temporary output, from the prepared samples.

Results are merged in shard order, skips by raw position, so manifest, index and skip report equal the local
engine's; :func:`mmdata.shards.write.write_split` still writes index and manifest and publishes atomically.
A task that fails makes the run fail: the tasks still running are cancelled and waited for, and nothing is
published.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmdata.corpora.base import Corpus, RawCount, Skip
from mmdata.shards.content import ContentAudit
from mmdata.shards.engine import Admitted, ShardJob, Written
from mmdata.shards.parts import Meta, prepare_items, prepare_part, write_group
from mmdata.types import Sample


class Tasks(Protocol):
    """What a backend gives the two phases: remote calls whose results are fetched by reference."""

    cpus: int  # processes running tasks at once: the driver keeps twice as many parts and shards ahead
    #: Whether a shard-writing task leaves its fsync to the process's background syncs (:meth:`sync` waits).
    background_sync: bool

    def put(self, value: Any) -> Any:
        """A reference to ``value`` for tasks' arguments (the job: put once, before any task)."""

    def submit(self, function: Callable[..., Any], *args: Any, returns: int = 1) -> Any:
        """Run ``function(*args)`` (references among ``args`` resolved) -> a reference to its result, or a tuple
        of ``returns`` references to the items of the tuple it returns."""

    def get(self, ref: Any, what: str) -> Any:
        """The result behind ``ref``; a task's own error raised as itself, a task that could not run (its
        process died for good) as ShardIntegrityError naming ``what``."""

    def sync(self) -> None:
        """Return once every shard the tasks wrote is on disk; raise a failed fsync, naming the shard."""

    def cancel(self, refs: list[Any]) -> None:
        """Stop the tasks behind ``refs`` and wait for them, so none writes after it."""


@dataclass
class _Group:
    """The samples planned into one shard: (part, place in part) each, and the shard's size so far."""

    picks: list[tuple[int, int]] = field(default_factory=list)
    offset: int = 0

    def full(self, job: ShardJob, sizes: list[int]) -> bool:
        """Whether a sample with these payload sizes starts a new shard (:meth:`ShardSink.rotates`'s rule)."""
        return bool(self.picks) and (len(self.picks) >= job.max_samples
                                     or self.offset + sum(size + 1024 for size in sizes) > job.max_bytes)

    def add(self, part: int, at: int, sizes: list[int]) -> None:
        self.picks.append((part, at))
        self.offset += sum(512 + size + -size % 512 for size in sizes)


@dataclass(frozen=True)
class SplitSource:
    """Where a split's raw items come from: corpus, root, split and reader options."""

    corpus: Corpus
    root: str | Path
    split: str
    options: dict[str, Any]

    def parts_count(self) -> RawCount | None:
        """The raw count when tasks can read parts themselves (the corpus has ``iter_part`` and a ``count_raw``
        of raw items that loads no part whole), else None."""
        corpus = self.corpus
        if corpus.iter_part is None or corpus.count_raw is None:
            return None
        count = corpus.count_raw(self.root, self.split, **self.options)
        # rows: it counts index rows, not the items iter_part numbers; not parted: each part would load it whole.
        return None if count.rows or not count.parted else count


class PartedSplit:
    """One split written in two phases of tasks. :meth:`items` is the stream ``write_split`` admits (per raw
    item the reader's Skip or a stub sample, in source order, phase 1 running ahead); :meth:`write` is the engine
    it hands the admitted stubs to. ``write`` sets the job before it pulls the stream, so the stream's tasks
    have it."""

    def __init__(self, tasks: Tasks, source: SplitSource | Iterable[Sample | Skip], part_size: int) -> None:
        """``source``: a corpus split, or the items themselves (read here, in the driver); ``part_size``: raw
        items per phase-1 task."""
        self.tasks, self.source = tasks, source
        self.what = f"{source.corpus.name}/{source.split}" if isinstance(source, SplitSource) else "split"
        self.part_size, self.ahead = part_size, 2 * max(1, tasks.cpus)
        self.job_ref: Any = None
        self.parts: dict[int, Any] = {}  # part number -> ref of its prepared samples, while a shard needs it
        self.where: dict[int, tuple[int, int, Meta]] = {}  # raw position -> (part, place, meta)
        self.pending: deque[tuple[int, int, Any, Any]] = deque()  # phase 1 in flight: part, first, refs
        self.flight: deque[Any] = deque()  # phase 2 in flight, in shard order
        self.written: Written | None = None

    def items(self) -> Iterator[Sample | Skip]:
        """Per raw item, in source order: the reader's Skip, or a stub sample (``__key__``, source, repairs)."""
        for part, (first, metas, prepared) in enumerate(self._submitted()):
            self.pending.append((part, first, metas, prepared))
            if len(self.pending) > self.ahead:
                yield from self._take()
        while self.pending:
            yield from self._take()

    def _submitted(self) -> Iterator[tuple[int, Any, Any]]:
        """(first raw position, meta ref, prepared ref) of each part's phase-1 task, submitted one by one."""
        source, size = self.source, self.part_size
        count = source.parts_count() if isinstance(source, SplitSource) else None
        if count is None:
            yield from self._shipped()
            return
        for part, start in enumerate(range(0, count.raw, size)):
            yield start, *self.tasks.submit(prepare_part, self.job_ref, source.corpus.name, str(source.root),
                                            source.split, source.options, part, start,
                                            min(start + size, count.raw), returns=2)

    def _shipped(self) -> Iterator[tuple[int, Any, Any]]:
        """The fallback for a corpus without ``iter_part`` (or counted in index rows): the driver reads, the tasks
        check and encode."""
        source, chunk, start, size = self.source, [], 0, self.part_size
        if isinstance(source, SplitSource):
            source = source.corpus.iter_samples(source.root, source.split, **source.options)
        for item in source:
            chunk.append(item)
            if len(chunk) == size:
                yield start, *self.tasks.submit(prepare_items, self.job_ref, chunk, start // size, returns=2)
                start, chunk = start + size, []
        if chunk:
            yield start, *self.tasks.submit(prepare_items, self.job_ref, chunk, start // size, returns=2)

    def _take(self) -> Iterator[Sample | Skip]:
        part, first, metas, prepared = self.pending.popleft()
        self.parts[part] = prepared
        for at, meta in enumerate(self.tasks.get(metas, self.what)):
            self.where[first + at] = (part, at, meta)
            yield meta[0]

    def write(self, admitted: Iterator[Admitted], job: ShardJob) -> Written:
        """Plan and write the shards of the admitted samples (see the module docstring); on any failure cancel
        and wait for every task in flight, so nothing writes into the temporary output after it."""
        self.job_ref = self.tasks.put(job)
        self.written = Written([], [], ContentAudit(job.features))
        try:
            self._plan(admitted, job)
            while self.flight:
                self.written.add(self.tasks.get(self.flight.popleft(), self.what))
            self.tasks.sync()  # before write_split writes the index and the manifest
        except BaseException:
            self._cancel()
            raise
        return self.written

    def _plan(self, admitted: Iterator[Admitted], job: ShardJob) -> None:
        group, index, seen = _Group(), 0, 0
        for position, stub, _, repairs, source in admitted:
            for earlier in range(seen, position):  # refused by admission: no longer needed
                self.where.pop(earlier, None)
            seen = position + 1
            part, at, (_, sizes, problem, error) = self.where.pop(position)
            if error is not None:
                raise error
            if problem is not None:
                self.written.skips.append((position, Skip(stub["__key__"], source, *problem)))
                continue
            if group.full(job, sizes):
                self._submit(index, group.picks)
                group, index = _Group(), index + 1
                for done in [n for n in self.parts if n < part]:
                    del self.parts[done]  # the submitted tasks hold what they need
            group.add(part, at, sizes)
            self.written.repairs.update(repairs)
        if group.picks:
            self._submit(index, group.picks)

    def _submit(self, index: int, picks: list[tuple[int, int]]) -> None:
        numbers = sorted({part for part, _ in picks})
        slot = {number: i for i, number in enumerate(numbers)}
        self.flight.append(self.tasks.submit(write_group, self.job_ref, index,
                                             [(slot[part], at) for part, at in picks], self.tasks.background_sync,
                                             *[self.parts[number] for number in numbers]))
        while len(self.flight) > self.ahead:
            self.written.add(self.tasks.get(self.flight.popleft(), self.what))

    def _cancel(self) -> None:
        refs = [*self.flight, *(ref for item in self.pending for ref in item[2:])]
        self.tasks.cancel(refs)
        self.flight.clear()
        self.pending.clear()
