"""``mmdata verify``: re-hash shards against the manifest and reconcile counts with the index and the report."""
from __future__ import annotations

from pathlib import Path

from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX, MANIFEST, ShardIntegrityError, read_manifest, sha256_file
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


def verify_split(directory: Path) -> list[str]:
    """Every problem found in one split directory, each naming the file (empty list: all good)."""
    try:
        manifest = read_manifest(directory)
        index = read_index(directory / INDEX)
    except ShardIntegrityError as exc:
        return [str(exc)]
    problems = []
    listed = {s["name"] for s in manifest["shards"]}
    problems += [f"{p}: tar file not listed in the manifest" for p in sorted(directory.glob("*.tar"))
                 if p.name not in listed]
    for record in manifest["shards"]:
        problems += _verify_shard(directory / record["name"], record, index)
    report = manifest["report"]
    if len(index["key"]) != manifest["rows"] or report["written"] != manifest["samples"]:
        problems.append(f"{directory}: index rows {len(index['key'])} (manifest {manifest['rows']}), manifest "
                        f"samples {manifest['samples']}, report written {report['written']} disagree")
    if report["raw"] != report["written"] + report["skipped"]:
        problems.append(f"{directory}: raw {report['raw']} != written {report['written']} + skipped "
                        f"{report['skipped']}")
    return problems


def _verify_shard(path: Path, record: dict, index: dict) -> list[str]:
    if not path.exists():
        return [f"{path}: missing"]
    if path.stat().st_size != record["bytes"]:
        return [f"{path}: {path.stat().st_size} bytes, manifest says {record['bytes']}"]
    if sha256_file(path) != record["sha256"]:
        return [f"{path}: sha256 mismatch (corrupted)"]
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


def verify(directory: str | Path) -> dict[str, list[str]]:
    """Verify a corpus shard directory or one split: split name -> problems."""
    return {d.name: verify_split(d) for d in split_dirs(Path(directory))}
