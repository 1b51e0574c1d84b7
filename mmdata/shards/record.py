"""``mmdata.json``: the corpus record, written last into a corpus output folder.

A split's ``manifest.json`` protects its shards (their sha256); nothing protected the manifest and
``index.parquet`` themselves, and nothing said the corpus output was complete. The record does both: it names
the corpus and its splits and holds the sha256 of every split's manifest and index. It is written inside the
temporary folder right before the folder is renamed into place, so an output with a valid record is a finished
mmdata output, and ``mmdata verify`` detects any later change to a manifest or an index (a flipped label, a
swapped checksum) by its hash.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmdata.errors import ShardIntegrityError
from mmdata.shards.manifest import INDEX, MANIFEST, read_manifest, sha256_file, write_json_atomic

RECORD = "mmdata.json"
RECORD_FORMAT = "mmdata-corpus/1"


def write_corpus_record(corpus_dir: Path, corpus: str, splits: list[str]) -> dict[str, Any]:
    """Hash every split's manifest and index and write ``corpus_dir/mmdata.json`` (atomically, last).

    Deterministic (sorted keys, no time stamps), so the same shards give a byte-identical record.

    Args:
        corpus_dir: the corpus output folder (the temporary one, before it is published).
        corpus: the corpus name every manifest must name.
        splits: the corpus's splits in canonical order; each must be a completed split folder.

    Returns:
        The record written.

    Raises:
        ShardIntegrityError: a split folder has no valid manifest or index, or belongs to another corpus/split.
    """
    corpus_dir = Path(corpus_dir)
    files = {}
    for split in splits:
        directory = corpus_dir / split
        manifest = read_manifest(directory)
        if (manifest["corpus"], manifest["split"]) != (corpus, split):
            raise ShardIntegrityError(f"{directory / MANIFEST}: names {manifest['corpus']}/{manifest['split']}, "
                                      f"expected {corpus}/{split}; the corpus record is not written")
        if not (directory / INDEX).is_file():
            raise ShardIntegrityError(f"{directory / INDEX}: missing; the corpus record is not written")
        files[split] = {MANIFEST: sha256_file(directory / MANIFEST), INDEX: sha256_file(directory / INDEX)}
    record = {"format": RECORD_FORMAT, "corpus": corpus, "splits": list(splits), "files": files}
    write_json_atomic(corpus_dir / RECORD, record)
    return record


def read_corpus_record(corpus_dir: Path) -> dict[str, Any]:
    """The record of a corpus output folder, checked for format and shape.

    Raises:
        ShardIntegrityError: no record (an unfinished output, or not an mmdata output), or an unreadable or
            malformed one; the message names the file and the fix.
    """
    path = Path(corpus_dir) / RECORD
    if not path.is_file():
        raise ShardIntegrityError(
            f"{path}: missing; {Path(corpus_dir)} is not a finished mmdata output (a run was interrupted, or it "
            f"predates corpus records, or mmdata did not write it); re-run `mmdata shard` (or `dvc repro`)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShardIntegrityError(f"{path}: unreadable corpus record ({exc}); re-run `mmdata shard`") from exc
    if not _well_formed(record):
        raise ShardIntegrityError(f"{path}: not an {RECORD_FORMAT} corpus record; re-run `mmdata shard`")
    return record


def _well_formed(record: Any) -> bool:
    """True when ``record`` has the format tag, a corpus name and two hashes for each listed split."""
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return False
    splits, files = record.get("splits"), record.get("files")
    if not isinstance(record.get("corpus"), str) or not isinstance(splits, list) or not isinstance(files, dict):
        return False
    return all(isinstance(files.get(s), dict) and set(files[s]) == {MANIFEST, INDEX} for s in splits) \
        and set(files) == set(splits)


def is_mmdata_output(path: Path, corpus: str) -> bool:
    """True when ``path`` is a finished mmdata output of ``corpus``: its record exists, parses and names it.

    Only the record is read (no hashing): this recognises an earlier output that may be replaced, it does not
    verify one (that is :func:`mmdata.shards.verify.verify`).
    """
    try:
        return read_corpus_record(Path(path))["corpus"] == corpus
    except ShardIntegrityError:
        return False
