"""``mmdata verify``: is a shard output finished, unaltered, internally consistent and reconciled with its source?

For a corpus output folder, every split the corpus declares (a missing one is a problem) is checked:

1. the corpus record ``mmdata.json`` (:mod:`mmdata.shards.record`) exists, names the corpus and holds the sha256
   of the split's ``manifest.json`` and ``index.parquet`` (an output without it is unfinished or not mmdata's);
2. every shard's size and sha256 match the manifest, and no tar is unlisted;
3. the index against the tars: member offsets, sizes, crc32, keys and labels (:mod:`mmdata.shards.audit`);
4. counts: index rows, written samples, and the ledger ``raw = written + skipped``;
5. with ``source``: the corpus's ``count_raw`` over the raw root equals the report's ``raw`` (the ledger unit
   of each corpus is listed in ``docs/ledger_units.md``).

A single split folder may be given too; it is checked against its parent's record when there is one (a split
written alone by :func:`mmdata.shards.write.write_split` has none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import LedgerError, MmdataError, ShardIntegrityError
from mmdata.shards.audit import audit_index
from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX, MANIFEST, read_manifest, sha256_file
from mmdata.shards.reconcile import check_ledger, check_source_count
from mmdata.shards.record import RECORD, read_corpus_record
from mmdata.shards.tar import shard_keys


def split_dirs(directory: Path) -> list[Path]:
    """The split directories under ``directory`` (itself if it is one), sorted."""
    directory = Path(directory)
    if (directory / MANIFEST).exists():
        return [directory]
    found = sorted(p for p in directory.iterdir() if p.is_dir() and (p / MANIFEST).exists()) \
        if directory.is_dir() else []
    if not found:
        raise ShardIntegrityError(f"{directory}: no split with a {MANIFEST} (not a shard directory, or unfinished)")
    return found


def verify(directory: str | Path, source: str | Path | None = None) -> dict[str, list[str]]:
    """Verify a corpus shard directory or one split: split name (or ``mmdata.json``) -> problems.

    Args:
        directory: the corpus output folder (``data/shards/<corpus>``) or one split folder.
        source: the raw root to reconcile the raw counts with (``--source``), or None.

    Raises:
        ShardIntegrityError: ``directory`` holds neither a split nor a corpus record.
    """
    directory = Path(directory)
    if (directory / MANIFEST).exists():
        record, problems = _parent_record(directory)
        return {directory.name: problems + verify_split(directory, record=record, source=source)}
    found = {p.name: p for p in sorted(directory.iterdir()) if p.is_dir() and (p / MANIFEST).exists()} \
        if directory.is_dir() else {}
    if not found and not (directory / RECORD).exists():
        raise ShardIntegrityError(f"{directory}: no split with a {MANIFEST} and no {RECORD}: not an mmdata shard "
                                  f"output, or an unfinished one (run `mmdata shard`)")
    results: dict[str, list[str]] = {}
    try:
        record = read_corpus_record(directory)
    except ShardIntegrityError as exc:
        record, results[RECORD] = None, [str(exc)]
    corpus = record["corpus"] if record else _corpus_name(found)
    declared = _declared(corpus, record, found)
    for split in declared:
        results[split] = verify_split(directory / split, record=record, source=source) if split in found else \
            [f"{directory / split}: missing split (corpus {corpus} declares {', '.join(declared)}); re-run "
             f"`mmdata shard {corpus}`"]
    for name in sorted(set(found) - set(declared)):
        results[name] = [f"{found[name]}: not a split of corpus {corpus} (declared: {', '.join(declared)})"]
    return results


def _corpus_name(found: dict[str, Path]) -> str:
    """The corpus the first readable manifest names ("?" when none is readable)."""
    for path in found.values():
        try:
            return read_manifest(path)["corpus"]
        except ShardIntegrityError:
            continue
    return "?"


def _declared(corpus: str, record: dict[str, Any] | None, found: dict[str, Path]) -> list[str]:
    """The splits ``corpus`` declares in the registry; else those of the record; else those found."""
    from mmdata.corpora import CORPORA  # here: the registry imports every reader

    if corpus in CORPORA:
        return list(CORPORA[corpus].splits)
    return list(record["splits"]) if record else sorted(found)


def _parent_record(split_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """(record of the corpus folder holding ``split_dir`` or None when it has none, [problem reading it])."""
    if not (split_dir.parent / RECORD).exists():
        return None, []
    try:
        return read_corpus_record(split_dir.parent), []
    except ShardIntegrityError as exc:
        return None, [str(exc)]


def verify_split(directory: Path, *, record: dict[str, Any] | None = None,
                 source: str | Path | None = None) -> list[str]:
    """Every problem found in one split directory, each naming the file (empty list: all good).

    Args:
        directory: the split folder.
        record: the corpus record to check the manifest and index hashes against, or None.
        source: the raw root to reconcile the raw count with, or None.
    """
    try:
        manifest = read_manifest(directory)
        index = read_index(directory / INDEX)
    except ShardIntegrityError as exc:
        return [str(exc)]
    problems = _record_problems(directory, manifest, record) if record is not None else []
    listed = {s["name"] for s in manifest["shards"]}
    problems += [f"{p}: tar file not listed in the manifest" for p in sorted(directory.glob("*.tar"))
                 if p.name not in listed]
    bad = set()
    for shard in manifest["shards"]:
        found = _verify_shard(directory / shard["name"], shard, index)
        bad |= {shard["name"]} if found else set()
        problems += found
    # A damaged shard is reported once, above; comparing its members with the index would only repeat it.
    intact = {**manifest, "shards": [s for s in manifest["shards"] if s["name"] not in bad]}
    problems += audit_index(directory, intact, _without_shards(index, bad))
    problems += _count_problems(directory, manifest, index)
    if source is not None:
        problems += _source_problems(manifest, Path(source))
    return problems


def _without_shards(index: dict[str, np.ndarray], shards: set[str]) -> dict[str, np.ndarray]:
    if not shards:
        return index
    keep = ~np.isin(index["shard"].astype(str), sorted(shards))
    return {name: column[keep] for name, column in index.items()}


def _record_problems(directory: Path, manifest: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The split's manifest and index against the hashes in the corpus record."""
    where = directory.parent / RECORD
    entry = record["files"].get(directory.name)
    if entry is None:
        return [f"{directory}: split {directory.name} is not in {where} (left over from another run?)"]
    problems = []
    if (manifest["corpus"], manifest["split"]) != (record["corpus"], directory.name):
        problems.append(f"{directory / MANIFEST}: names {manifest['corpus']}/{manifest['split']}, the record "
                        f"{record['corpus']}/{directory.name}")
    for name in (MANIFEST, INDEX):
        if sha256_file(directory / name) != entry[name]:
            problems.append(f"{directory / name}: sha256 differs from the one recorded in {where} (altered after "
                            f"the run; re-run `mmdata shard` to rebuild it)")
    return problems


def _count_problems(directory: Path, manifest: dict[str, Any], index: dict[str, np.ndarray]) -> list[str]:
    report, problems = manifest["report"], []
    if len(index["key"]) != manifest["rows"] or report["written"] != manifest["samples"]:
        problems.append(f"{directory}: index rows {len(index['key'])} (manifest {manifest['rows']}), manifest "
                        f"samples {manifest['samples']}, report written {report['written']} disagree")
    try:
        check_ledger(report, str(directory))
    except LedgerError as exc:
        problems.append(str(exc))
    return problems


def _source_problems(manifest: dict[str, Any], source: Path) -> list[str]:
    """[problem] unless the corpus's ``count_raw`` over ``source`` matches what the split accounts for."""
    from mmdata.corpora import get_corpus

    name, split = manifest["corpus"], manifest["split"]
    where = f"{name}/{split}"
    try:
        corpus = get_corpus(name)
        if corpus.count_raw is None:
            return [f"{where}: corpus {name} declares no count_raw; its raw items cannot be counted in {source}"]
        count = corpus.count_raw(source, split, **manifest.get("params", {}).get("reader", {}))
        check_source_count(count, manifest, source, where)
    except LedgerError as exc:
        return [str(exc)]
    except (MmdataError, ValueError, OSError) as exc:  # a missing root or file: a finding, named with the root
        return [f"{where}: cannot count the raw items under {source}: {exc}"]
    return []


def _verify_shard(path: Path, record: dict, index: dict) -> list[str]:
    if not path.exists():
        return [f"{path}: missing"]
    if path.stat().st_size != record["bytes"]:
        return [f"{path}: {path.stat().st_size} bytes, manifest says {record['bytes']}"]
    if (digest := sha256_file(path)) != record["sha256"]:
        return [f"{path}: sha256 mismatch: {digest[:16]}..., the manifest says {record['sha256'][:16]}... "
                f"(corrupted, or replaced by another run's shard)"]
    try:
        keys = shard_keys(path)
    except Exception as exc:  # noqa: BLE001 - any tar failure is a finding, reported with the path
        return [f"{path}: unreadable tar ({exc})"]
    # Index rows of one stored sample (a View) are consecutive and share its ``sample`` key.
    expected = [str(k) for k, s in zip(index["sample"], index["shard"]) if s == record["name"]]
    expected = [k for i, k in enumerate(expected) if i == 0 or expected[i - 1] != k]
    if keys != expected or len(keys) != record["samples"]:
        return [f"{path}: {len(keys)} samples in the tar, manifest says {record['samples']}, index lists "
                f"{len(expected)} (or the key order differs)"]
    return []
