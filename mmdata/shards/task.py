"""One task of the writing engine (:mod:`mmdata.shards.engine`): check, encode and append samples to one shard.

A task runs in a worker process or inline. It gets the admitted samples from a known first one and writes
exactly one shard: each sample is checked against the schema first (:func:`mmdata.corpora.check.check_sample`,
the view rows; a failing sample is a skip the task records, with the same reason and detail a sequential writer
gives), then encoded, audited and appended, until the shard is full (``max_samples`` written, or the next sample
would pass ``max_bytes``) or the samples run out. The closed shard is fsynced in the background
(:mod:`mmdata.shards.durable`): the engine waits for that before anything is published. The samples it went through (``count``, skips included) are
where the next shard starts.
"""
from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.corpora.base import Skip
from mmdata.corpora.check import check_rows, check_sample
from mmdata.errors import SampleError, ShardIntegrityError
from mmdata.shards.codec import encode
from mmdata.shards.content import ContentAudit
from mmdata.shards.durable import syncs
from mmdata.shards.index import index_label
from mmdata.shards.publish import disk_full_names
from mmdata.shards.tar import ShardSink
from mmdata.types import Features, Sample, View

#: An admitted sample: (raw position in the source stream, the sample, its view rows or None, the repairs the
#: reader applied, the source file). The raw position orders the task's skips among the driver's.
Admitted = tuple[int, Sample, "list[dict[str, Any]] | None", Any, str]


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
    view: View | None = None
    #: Lists a closed shard's keys from its file (tar.shard_keys): the post-write check each task runs on its shard.
    keys_reader: Callable[[Path], list[str]] | None = None


@dataclass
class Task:
    """Write shard ``index`` from the admitted sample number ``start``, taking samples from ``samples`` in order.

    ``final``: no admitted sample follows ``samples``.
    """

    index: int
    start: int
    samples: list[Admitted]
    final: bool


@dataclass
class TaskResult:
    """What a task did: ``count`` samples gone through (written or skipped), its shard record (None when it wrote
    nothing), index rows, content audit, skips (raw position, Skip) and repairs of the written samples;
    ``failed``: the admitted numbers of the samples that failed their checks (the driver plans around them)."""

    task: Task
    count: int
    complete: bool  # the shard was closed by the size rule or the stream's end, not by running out of samples
    record: dict[str, Any] | None
    rows: list[dict[str, Any]]
    audit: ContentAudit
    skips: list[tuple[int, Skip]] = field(default_factory=list)
    repairs: Counter = field(default_factory=Counter)
    failed: list[int] = field(default_factory=list)


def _length(value: Any) -> int:
    """Length of the first axis; for image bytes kept as they came, the height read from the header alone."""
    if isinstance(value, (bytes, bytearray)):
        from mmdata.modalities.image import image_shape

        return image_shape(bytes(value))[0]
    return int(np.shape(value)[0])


def columns(features: Features) -> list[tuple[str, str, str, str, str | None]]:
    """Per field, in sorted order: (name, its offset, size and crc32 column names, its length column or None)."""
    return [(name, f"offset_{name}", f"size_{name}", f"crc32_{name}",
             f"length_{name}" if features[name].variable_axes else None) for name in sorted(features)]


def index_rows(key: str, shard: str, sample: Sample, features: Features, label: str, payloads: list[bytes],
               offsets: list[int], crcs: list[int], rows: list[dict[str, Any]] | None,
               fields: list[tuple[str, str, str, str, str | None]] | None = None) -> list[dict[str, Any]]:
    """Index rows of one stored sample: one row, or one per entry of its ``__rows__`` (a :class:`View`).

    ``fields``: :func:`columns` of ``features``, computed once per task by the caller.
    """
    base: dict[str, Any] = {"key": key, "sample": key, "shard": shard}
    for (name, offset_col, size_col, crc_col, length_col), data, offset, crc in zip(
            fields or columns(features), payloads, offsets, crcs):
        base[offset_col], base[size_col], base[crc_col] = offset, len(data), crc
        if length_col is not None:
            base[length_col] = _length(sample[name])
    if rows is None:
        return [{**base, "label": index_label(sample[label], features[label])}]
    element = replace(features[label], shape=())  # a View row's label is one element of the stored label
    return [{**base, "key": f"{key}/{row['id']}", "label": index_label(row["label"], element),
             **{k: v for k, v in row.items() if k not in ("id", "label")}} for row in rows]


def sample_problem(job: ShardJob, key: str, sample: Sample, views: list[dict[str, Any]] | None) -> SampleError | None:
    """The schema check's verdict on one sample (None: it passes)."""
    try:
        check_sample(sample, job.features)
        check_rows(key, sample, views, job.view, job.features, job.label)
    except SampleError as exc:
        return exc
    return None


def reconcile_shard(job: ShardJob, record: dict[str, Any]) -> None:
    """Read the closed shard's keys back from its file and compare them with what was written (writer counters
    can lie); runs in the task, so the check is spread over the writing processes."""
    path = job.directory / record["name"]
    got = job.keys_reader(path)
    if got != record["keys"]:
        raise ShardIntegrityError(f"{path}: wrote {len(record['keys'])} samples, read back {len(got)} "
                                  f"(reconciliation failed)")


def member_suffixes(job: ShardJob) -> list[str]:
    """``.<field>.<codec>`` of each field, in sorted field order: a sample's tar member names are key + these."""
    return [f".{name}.{job.features[name].codec}" for name in sorted(job.features)]


def run_task(job: ShardJob, task: Task) -> TaskResult:
    """Write one shard (see :class:`Task` and the module docstring); runs in a worker process or inline."""
    names, codecs = sorted(job.features), member_suffixes(job)
    fields = columns(job.features)
    sink = ShardSink(job.directory, job.prefix, job.max_samples, job.max_bytes, first=task.index, syncs=syncs())
    result = TaskResult(task, 0, False, None, [], ContentAudit(job.features))
    written, cut = 0, False
    with sink, disk_full_names(lambda: sink.writing() or job.directory):
        for number, (position, sample, views, repairs, source) in enumerate(task.samples, task.start):
            if written == job.max_samples:
                break  # full by count: the next shard starts here
            key = sample["__key__"]
            problem = sample_problem(job, key, sample, views)
            if problem is not None:
                result.skips.append((position, Skip(key, source, problem.reason, str(problem))))
                result.failed.append(number)
                result.count += 1
                continue
            payloads = [job.encoder(sample[name], job.features[name]) for name in names]
            members = [(key + codec, data) for codec, data in zip(codecs, payloads)]
            if sink.rotates(members):
                cut = True
                break
            shard, offsets = sink.add(key, members)
            result.audit.add(key, sample, payloads)
            crcs = [zlib.crc32(data) for data in payloads]
            result.rows += index_rows(key, shard, sample, job.features, job.label, payloads, offsets, crcs, views,
                                      fields)
            result.repairs.update(repairs)
            written, result.count = written + 1, result.count + 1
        records = sink.close()
    result.record = records[0] if records else None
    if result.record is not None and job.keys_reader is not None:
        reconcile_shard(job, result.record)
    result.complete = cut or written == job.max_samples or (task.final and result.count == len(task.samples))
    return result
