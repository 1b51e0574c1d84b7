"""``manifest.json``: the commit marker of a shard split, written last.

It records the schema (Features and codec per field), per-shard sample count, byte size and sha256, class
counts, the source fingerprint, the params used and the skip report. Readers trust nothing that is not in it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mmdata.errors import ShardIntegrityError
from mmdata.types import Features, Field

MANIFEST = "manifest.json"
INDEX = "index.parquet"
FORMAT = "mmdata-shards/1"
_REQUIRED = ("format", "corpus", "split", "features", "shards", "samples", "report")




def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON deterministically (sorted keys) to a temporary name, fsync, then rename over ``path``."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_manifest(split_dir: Path) -> dict[str, Any]:
    """The manifest of a split directory, checked for format and required keys.

    Raises:
        ShardIntegrityError: missing, unreadable or incomplete manifest (the path is named).
    """
    path = Path(split_dir) / MANIFEST
    if not path.exists():
        raise ShardIntegrityError(
            f"{path}: no manifest; the split was never completed (re-run `mmdata shard` or `dvc repro`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShardIntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing or manifest.get("format") != FORMAT:
        raise ShardIntegrityError(f"{path}: not an {FORMAT} manifest (missing {missing}, "
                                  f"format {manifest.get('format')!r})")
    return manifest


def manifest_features(manifest: dict[str, Any]) -> Features:
    """The Features recorded in a manifest."""
    return {name: Field.from_json(spec) for name, spec in manifest["features"].items()}
