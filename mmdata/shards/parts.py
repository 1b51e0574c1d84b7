"""The two kinds of task of the Ray writing engine (:mod:`mmdata.shards.ray_engine`); plain functions, no Ray.

Phase 1, :func:`prepare_part` / :func:`prepare_items`: one contiguous part of a split's source (raw items
``start .. stop - 1``, read by the worker itself through the corpus's ``iter_part``, or shipped by the driver)
is checked and encoded sample by sample exactly as a local shard task does (:func:`mmdata.shards.task.
sample_problem`, the job's encoder, :func:`mmdata.shards.task.index_rows`). It returns two lists, one entry per
raw item: small :data:`Meta` the driver admits and plans with (the reader's Skip, or the key, source, repairs,
exact payload sizes and the check's verdict), and the :class:`Prepared` samples (payloads, index rows), which stay
in Ray's object store until phase 2.

Phase 2, :func:`write_group`: the samples the driver planned for shard ``index`` (exactly, from the payload
sizes) are appended to that shard under the temporary output, which is closed and its keys read back, as a
local task does. The bytes are those of the local engine: same checks, same encoder, same tar sink.
"""
from __future__ import annotations

import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.corpora import get_corpus
from mmdata.corpora.base import REPAIRS, SOURCE, Skip
from mmdata.errors import ShardIntegrityError
from mmdata.shards.content import ContentAudit
from mmdata.shards.durable import syncs
from mmdata.shards.publish import disk_full_names
from mmdata.shards.tar import ShardSink
from mmdata.shards.task import (ShardJob, TaskResult, columns, index_rows, member_suffixes, reconcile_shard,
                                 sample_problem)
from mmdata.types import ROWS, Sample, field_modality

#: Test-only fault hook: a folder where a file ``<shard prefix>-<task>`` holding a number N makes the next N
#: runs of that task (``part<k>`` or ``shard<k>``) exit their worker process at once (a killed task).
FAULTS_ENV = "MMDATA_TEST_RAY_FAULTS"

#: Per raw item, for the driver: (the reader's Skip, or a stub sample holding only ``__key__`` and the source
#: and repairs entries the reader gave; payload sizes in sorted field order or None; the failed check as
#: (reason, detail) or None; an error raised checking or encoding it, raised if the sample is to be written).
Meta = tuple["Skip | Sample", "list[int] | None", "tuple[str, str] | None", "BaseException | None"]


@dataclass
class Prepared:
    """One sample checked and encoded: its payloads (sorted field order; bytes, or read-only views once it
    crossed processes), its index rows (``shard`` and the ``offset_*`` columns are filled when written) and its
    ``feat_*`` values (the content audit's flags)."""

    key: str
    payloads: list[bytes]
    rows: list[dict[str, Any]]
    feats: dict[str, Any]

    def __reduce_ex__(self, protocol: int) -> Any:
        """Under protocol 5 the payloads go out of band (``PickleBuffer``), so Ray's object store and the local
        engine's result files hold them beside the pickle, not copied into it, and hand them back as read-only
        views (bytes-like: the tar sink and the audit take them as they are)."""
        if protocol < 5:
            return super().__reduce_ex__(protocol)
        return Prepared, (self.key, [pickle.PickleBuffer(data) for data in self.payloads], self.rows, self.feats)


def fault_hook(prefix: str, task: str) -> None:
    """Exit this worker process when the test fault folder asks for it (see :data:`FAULTS_ENV`)."""
    folder = os.environ.get(FAULTS_ENV)
    path = Path(folder, f"{prefix}-{task}") if folder else None
    if path is None or not path.is_file():
        return
    left = int(path.read_text() or 0)
    if left > 0:
        path.write_text(str(left - 1))
        os._exit(70)  # no cleanup, no exception: as if the process were killed


def _prepare(job: ShardJob, item: Sample, names: list[str], fields: list) -> tuple[Meta, Prepared | None]:
    """Check and encode one sample the way :func:`mmdata.shards.task.run_task` does."""
    stub = {name: item[name] for name in ("__key__", SOURCE, REPAIRS) if name in item}
    sample = {name: value for name, value in item.items() if name not in (SOURCE, REPAIRS, ROWS)}
    try:
        key, views = sample["__key__"], item.get(ROWS)
        problem = sample_problem(job, key, sample, views)
        if problem is not None:
            return (stub, None, (problem.reason, str(problem)), None), None
        payloads = [job.encoder(sample[name], job.features[name]) for name in names]
        crcs = [zlib.crc32(data) for data in payloads]
        rows = index_rows(key, "", sample, job.features, job.label, payloads, [0] * len(names), crcs, views,
                          fields)
    except Exception as exc:  # noqa: BLE001 - raised by the driver only if the sample is admitted (as locally)
        return (stub, None, None, exc), None
    feats = {name: sample[name] for name in names if field_modality(name) == "feat"}
    return (stub, [len(data) for data in payloads], None, None), Prepared(key, payloads, rows, feats)


def prepare_items(job: ShardJob, items: list[Sample | Skip], part: int) -> tuple[list[Meta], list[Prepared | None]]:
    """Phase 1 on items the driver read: (meta per item, prepared sample per item or None)."""
    fault_hook(job.prefix, f"part{part}")
    names, fields = sorted(job.features), columns(job.features)
    metas, prepared = [], []
    for item in items:
        if isinstance(item, Skip):  # the reader's own skip: the driver counts it, nothing to encode
            meta, ready = (item, None, None, None), None
        else:
            meta, ready = _prepare(job, item, names, fields)
        metas.append(meta)
        prepared.append(ready)
    return metas, prepared


def prepare_part(job: ShardJob, corpus: str, root: str, split: str, options: dict[str, Any], part: int,
                 start: int, stop: int) -> tuple[list[Meta], list[Prepared | None]]:
    """Phase 1 reading its own part: raw items ``start .. stop - 1`` of the split, through ``iter_part``.

    Raises:
        ShardIntegrityError: the corpus gave another number of items than asked for.
    """
    items = list(get_corpus(corpus).iter_part(root, split, start, stop, **options))
    if len(items) != stop - start:
        raise ShardIntegrityError(f"{corpus}/{split} at {root}: iter_part({start}, {stop}) gave {len(items)} raw "
                                  f"items, not {stop - start}; its count_raw and iter_part disagree")
    return prepare_items(job, items, part)


def _fill(item: Prepared, shard: str, offsets: list[int], fields: list) -> list[dict[str, Any]]:
    """The sample's index rows with its shard and data offsets."""
    for row in item.rows:
        row["shard"] = shard
        for (_, offset_col, *_), offset in zip(fields, offsets):
            row[offset_col] = offset
    return item.rows


def write_group(job: ShardJob, index: int, picks: list[tuple[int, int]], background: bool,
                *parts: list[Prepared | None]) -> TaskResult:
    """Phase 2: write shard ``index`` from the prepared samples ``parts[slot][at]`` for ``(slot, at)`` in
    ``picks`` (every one written: the driver planned the shard's end from the payload sizes). ``background``:
    fsync the closed shard in this process's background syncs (:mod:`mmdata.shards.durable`; the backend then
    waits for them before anything is published), else before returning.

    Raises:
        ShardIntegrityError: the samples do not fit one shard (a planning bug), or the keys read back differ.
    """
    fault_hook(job.prefix, f"shard{index}")
    fields, codecs = columns(job.features), member_suffixes(job)
    sink = ShardSink(job.directory, job.prefix, job.max_samples, job.max_bytes, first=index,
                     syncs=syncs() if background else None)
    result = TaskResult(None, 0, True, None, [], ContentAudit(job.features))  # type: ignore[arg-type]
    with sink, disk_full_names(lambda: sink.writing() or job.directory):
        for slot, at in picks:
            item = parts[slot][at]
            members = [(item.key + codec, data) for codec, data in zip(codecs, item.payloads)]
            if sink.rotates(members):
                raise ShardIntegrityError(f"{job.directory}: shard {index} was planned with {len(picks)} samples "
                                          f"but is full at {item.key} (a planning bug); nothing published")
            shard, offsets = sink.add(item.key, members)
            result.audit.add(item.key, item.feats, item.payloads)
            result.rows += _fill(item, shard, offsets, fields)
            result.count += 1
        result.record = sink.close()[0]
    if job.keys_reader is not None:
        reconcile_shard(job, result.record)
    return result
