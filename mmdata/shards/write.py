"""Deterministic, atomic, size-bounded shard writing (design section 4, reliability D1-D3).

A split is written into ``<split>.tmp-<pid>/``: shards as ``*.tar.partial`` renamed to ``*.tar`` when
complete, each then reconciled by the task that wrote it (its keys read back from the file's headers and
compared with what was written, :mod:`mmdata.shards.task`), then
``index.parquet`` and last ``manifest.json``; only then is the directory renamed into place. A killed run
leaves a ``.tmp-*`` directory and nothing that looks finished; the next run removes it once its process is
gone. What may be replaced, the lock and signal handling are :mod:`mmdata.shards.publish`'s.
"""
from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.corpora.base import REPAIRS, SOURCE, Skip
from mmdata.errors import BadInputError, ShardIntegrityError
from mmdata.shards.codec import encode
from mmdata.shards.engine import Admitted, ShardJob, Written, write_shards
from mmdata.shards.index import index_label, write_index
from mmdata.shards.manifest import FORMAT, INDEX, MANIFEST, write_json_atomic
from mmdata.shards.publish import (check_output, disk_full_names, interruptible, output_lock, remove_stale,
                                   replace_dir, temp_path)
from mmdata.shards.reconcile import check_ledger
from mmdata.shards.tar import MAX_MEMBER_NAME, shard_keys
from mmdata.types import ROWS, KEY_PATTERN, Features, Sample, View, check_features, field_modality


#: A writing engine: the admitted samples of a split (source order) and the job -> what its tasks wrote.
Writer = Callable[[Iterator[Admitted], ShardJob], Written]


@dataclass
class _Ledger:
    """Counts that must reconcile: raw = written + skipped; plus the repairs applied."""

    raw: int = 0
    skips: list[tuple[int, Skip]] = field(default_factory=list)  # (raw position, skip)
    repairs: Counter = field(default_factory=Counter)
    ignored: int = 0  # OS clutter (.DS_Store ...) in the source folders: outside raw = written + skipped

    def skip(self, skip: Skip) -> None:
        self.skips.append((self.raw - 1, skip))

    def merge(self, written: Written) -> None:
        """Take in the tasks' skips (failed checks) and repairs; the skip list comes out in source order."""
        failed = {skip.key.lower(): skip for _, skip in written.skips}
        self.skips = sorted(_claimed(self.skips, failed) + written.skips, key=lambda item: item[0])
        self.repairs.update(written.repairs)

    def report(self, written: int, where: str) -> dict[str, Any]:
        skips = [skip for _, skip in self.skips]
        reasons = Counter(s.reason for s in skips)
        report = {"raw": self.raw, "written": written, "skipped": len(skips), "ignored": self.ignored,
                  "skipped_by_reason": dict(sorted(reasons.items())), "repairs": dict(sorted(self.repairs.items())),
                  "skips": [s.to_json() for s in skips]}
        check_ledger(report, where)  # a writer bug, never bad input: fail loudly, publish nothing
        return report


def _claimed(skips: list[tuple[int, Skip]], failed: dict[str, Skip]) -> list[tuple[int, Skip]]:
    """The driver's skips, a duplicate of a key whose first copy then failed its check saying so."""
    if not failed:
        return skips
    out = []
    for position, skip in skips:
        first = failed.get(skip.key.lower()) if skip.reason.startswith("duplicate_key") else None
        if first is not None:
            detail = skip.detail.replace(" already written", " already claimed", 1)
            skip = replace(skip, detail=f"{detail} (that sample was then skipped: {first.reason})")
        out.append((position, skip))
    return out


def _label_summary(labels: list[Any], features: Features, label: str) -> dict[str, Any]:
    classes = features[label].classes
    if len(features[label].shape) >= 2:  # structured (boxes): see task.index_rows
        return {"label_summary": {"structured": list(features[label].shape)}}
    if classes is not None and labels and np.ndim(labels[0]) == 1:  # multi-hot rows: positives per class
        positives = np.asarray(labels, dtype=np.float64).sum(axis=0)
        return {"class_counts": {name: int(positives[i]) for i, name in enumerate(classes)}}
    if classes is not None:
        counts = Counter(int(v) for v in labels)
        summary = {"class_counts": {name: counts.get(i, 0) for i, name in enumerate(classes)}}
        unlabeled = features[label].unlabeled
        return {**summary, "unlabeled": counts.get(unlabeled, 0)} if unlabeled is not None else summary
    values = np.asarray(labels, dtype=np.float64)
    rounded = Counter(int(v) for v in np.round(values))
    return {"label_summary": {"min": float(values.min()), "max": float(values.max()),
                              "mean": float(values.mean()), "rounded_counts": dict(sorted(rounded.items()))}}


def _admit(item: Sample | Skip, longest: int, seen: dict[str, tuple[str, str]], ledger: _Ledger, where: str
           ) -> Admitted | None:
    """Count one raw item; return it admitted (see :data:`mmdata.shards.task.Admitted`), or None after recording
    why it was skipped. Only the sequential checks run here (key, name length, duplicates); the schema checks run
    in the shard tasks. The first copy of a key in source order claims it: a later copy is a ``duplicate_key``
    skip even when the first copy then fails its checks (both are skips, each with its reason)."""
    ledger.raw += 1
    if isinstance(item, Skip):
        ledger.skip(item)
        return None
    sample = dict(item)
    repairs, rows = sample.pop(REPAIRS, ()), sample.pop(ROWS, None)
    source = str(sample.pop(SOURCE, where))
    key = sample.get("__key__", "")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        ledger.skip(Skip(str(key), source, "bad_key", f"key {key!r} does not match {KEY_PATTERN.pattern}"))
        return None
    if len(key.encode()) + longest > MAX_MEMBER_NAME:
        ledger.skip(Skip(key, source, "key_too_long",
                                 f"member names of key {key} exceed {MAX_MEMBER_NAME} bytes"))
        return None
    # Keyed by the lower-case key: 'Clip' and 'clip' are one file where a shard is unpacked on macOS or Windows.
    folded = key.lower()
    if folded in seen:
        first, first_source = seen[folded]
        reason, which = ("duplicate_key", "") if first == key else ("duplicate_key_case", f" as {first}")
        ledger.skip(Skip(key, source, reason, f"key {key} already written{which} from {first_source}"))
        return None
    seen[folded] = (key, source)
    return ledger.raw - 1, sample, rows, repairs, source


def _label_name(features: Features) -> str:
    return next(n for n in features if field_modality(n) == "label")


def write_split(items: Iterable[Sample | Skip], features: Features, split_dir: Path, *, corpus: str, split: str,
                max_samples: int = 1000, max_bytes: int = 256 << 20, max_skip_fraction: float = 0.05,
                params: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
                view: View | None = None, wait: bool = False, ignored: int = 0, processes: int = 1,
                writer: Writer | None = None, source_files: Callable[[], list[dict[str, Any]]] | None = None
                ) -> dict[str, Any]:
    """Write one split as tar shards + index.parquet + manifest.json, atomically.

    Args:
        items: the reader's stream of samples and skips, in deterministic order.
        features: the corpus schema; every sample is checked against it before writing.
        split_dir: final directory (``data/shards/<corpus>/<split>``); replaced only when complete, and only
            when it is empty or an earlier mmdata output of the same corpus and split.
        corpus, split: names recorded in the manifest and used in shard file names.
        max_samples, max_bytes: shard size bounds (a shard always holds at least one sample).
        max_skip_fraction: fail (nothing committed) when more than this share of raw items is skipped.
        params, source: the params used and the raw-source fingerprint, recorded in the manifest.
        source_files: when given, the fingerprint's ``files`` (size and sha256 of every raw file), asked for
            only once the shards are written, so hashing the raw files can go on meanwhile elsewhere.
        view: how stored samples expand into index rows (samples then carry ``__rows__``), or None.
        wait: when another run holds the output's lock, wait for it instead of failing.
        ignored: OS clutter files (``.DS_Store`` ...) found in the source folders, recorded in the report.
        processes: processes that encode and write shards (:mod:`mmdata.shards.engine`); the bytes written are
            the same for any number.
        writer: the engine given the admitted samples and the job, when not the local one with ``processes``
            (:meth:`mmdata.shards.ray_engine.RaySplit.write`, whose ``items`` are then its stream); the bytes
            written are the same.

    Returns:
        The manifest written.

    Raises:
        BadInputError: no sample written, or too many skipped (the summary names the reasons).
        OutputError, LockError, DiskFullError, Interrupted: see :mod:`mmdata.shards.publish`.
    """
    check_features(features)
    split_dir = Path(split_dir)
    check_output(split_dir, corpus, split=split)  # before the lock: a refused output gets no lock file beside it
    with interruptible(), output_lock(split_dir, wait=wait):
        check_output(split_dir, corpus, split=split)
        remove_stale(split_dir)
        tmp = temp_path(split_dir)
        tmp.mkdir(parents=True)
        try:
            manifest = _write_into(tmp, items, features, corpus=corpus, split=split, max_samples=max_samples,
                                   max_bytes=max_bytes, max_skip_fraction=max_skip_fraction, params=params or {},
                                   source=source or {}, view=view, ignored=ignored, processes=processes,
                                   writer=writer, source_files=source_files)
            replace_dir(tmp, split_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed or interrupted run leaves nothing behind
            raise
    return manifest


def _admitted(items: Iterable[Sample | Skip], features: Features, ledger: _Ledger, where: str) -> Iterator[Admitted]:
    """The samples that pass admission (key, unique keys), in source order; the ledger counts the rest."""
    seen: dict[str, tuple[str, str]] = {}
    longest = max(len(f".{n}.{f.codec}") for n, f in features.items())  # the longest member-name suffix
    for item in items:
        admitted = _admit(item, longest, seen, ledger, where)
        if admitted is not None:
            yield admitted


def _write_into(tmp: Path, items: Iterable[Sample | Skip], features: Features, *, corpus: str, split: str,
                max_samples: int, max_bytes: int, max_skip_fraction: float, params: dict[str, Any],
                source: dict[str, Any], view: View | None, ignored: int, processes: int, writer: Writer | None,
                source_files: Callable[[], list[dict[str, Any]]] | None) -> dict[str, Any]:
    if max_samples < 1 or max_bytes < 1:
        raise ValueError("max_samples and max_bytes must be positive")
    label, names = _label_name(features), sorted(features)
    ledger = _Ledger(ignored=ignored)
    # shard_keys looked up here, at call time: the post-write check (each task's, on its closed shard) reads it.
    job = ShardJob(tmp, f"{corpus}-{split}", features, label, max_samples, max_bytes, encode, view, shard_keys)
    admitted = _admitted(items, features, ledger, str(source.get("release", corpus)))
    written = writer(admitted, job) if writer is not None else write_shards(admitted, job, processes)
    ledger.merge(written)
    shards, rows = written.records, written.rows
    report = {**ledger.report(sum(s["samples"] for s in shards), f"{corpus}/{split}"), **written.audit.report()}
    _check_budget(report, max_skip_fraction, f"{corpus}/{split}")
    with disk_full_names(lambda: tmp / INDEX):
        write_index(tmp / INDEX, rows)
    per_shard = Counter(row["shard"] for row in rows)
    manifest = {
        "format": FORMAT, "toolkit_version": _version(), "corpus": corpus, "split": split,
        "features": {n: features[n].to_json() for n in names},
        "codecs": {n: features[n].codec for n in names}, "label_field": label,
        "view": view.to_json() if view else None,
        "shards": [{**{k: v for k, v in s.items() if k != "keys"}, "rows": per_shard[s["name"]]} for s in shards],
        "samples": report["written"], "rows": len(rows),
        **_label_summary([row["label"] for row in rows], features, label),
        "source": source if source_files is None else {**source, "files": source_files()},
        "params": params, "report": report,
    }
    with disk_full_names(lambda: tmp / MANIFEST):
        write_json_atomic(tmp / MANIFEST, manifest)  # last: its presence means the split is complete
    return manifest


def _check_budget(report: dict[str, Any], max_skip_fraction: float, what: str) -> None:
    summary = f"raw {report['raw']}, written {report['written']}, skipped {report['skipped_by_reason']}"
    if report["written"] == 0:
        raise BadInputError(f"{what}: no sample written ({summary})")
    if report["skipped"] > max_skip_fraction * report["raw"]:
        first = report["skips"][0]
        raise BadInputError(
            f"{what}: skipped {report['skipped']}/{report['raw']} raw items, more than max_skip_fraction "
            f"{max_skip_fraction} ({summary}); first: {first['source']} {first['key']}: {first['detail']}")


def _version() -> str:
    from mmdata import __version__

    return __version__
