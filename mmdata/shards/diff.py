"""``mmdata diff OLD NEW``: what changed between two shard outputs (two corpus folders or two split folders).

Per split (paired by split name) it reports the samples added, removed and changed by key, read from
``index.parquet`` only: a row's content identity is every index column but its key, shard and offsets, i.e. per
stored field the payload ``(size, crc32)`` (and ``length`` where recorded), the ``label`` column and, under a
View, the row's ``pick`` / ``start``. View splits are compared row by row (keys ``<sample>/<row id>``). crc32 is
a 32-bit checksum: a changed field whose size is unchanged keeps its crc32 with probability about 2^-32, so a
change can be missed at that rate; ``exact=True`` (``--exact``) also compares the payload bytes of every row
whose identity agrees (read by offset and size from both shards), so "unchanged" is then exact.

From the manifests it reports class-count changes (``class_counts`` / ``label_summary``), schema changes
(``features``, ``codecs``, ``label_field``), params changes (reader options, shard sizes), source fingerprint
changes (release, number of raw files, files added, removed or with another sha256) and the skip reports side by
side. Nothing is written; the shards are opened with :class:`mmdata.shards.split.SplitShards` (sizes and row
counts checked against the manifest, no re-hash: that is ``mmdata verify``). Two git revisions of one
DVC-tracked output are compared by :mod:`mmdata.shards.revision`, which hands the opened sides to :func:`diff_sides`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import ShardIntegrityError
from mmdata.shards.split import SplitShards
from mmdata.shards.verify import split_dirs

#: Index columns that say where a row is, not what it holds.
_PLACE = ("key", "sample", "shard")
_KEY_LISTS = ("added", "removed", "changed")
_PARTS = ("classes", "schema", "params", "skips")


def open_side(path: str | Path, side: str) -> dict[str, SplitShards]:
    """split name -> opened split, for a corpus folder or one split folder.

    Raises:
        ShardIntegrityError: ``path`` holds no finished split (the side and path are named).
    """
    path = Path(path)
    if not path.exists():
        raise ShardIntegrityError(f"{path}: {side} does not exist (expected a shard folder or a split folder)")
    try:
        return {s.manifest["split"]: s for s in (SplitShards.open(d) for d in split_dirs(path))}
    except ShardIntegrityError as exc:
        raise ShardIntegrityError(f"{side} {path}: {exc}") from exc


def _norm(value: Any) -> Any:
    """A hashable, NaN-safe form of an index cell (vector labels become tuples, NaN becomes None)."""
    if isinstance(value, np.ndarray):
        return tuple(_norm(v) for v in value.tolist())
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _identities(split: SplitShards | None) -> dict[str, dict[str, Any]]:
    """key -> {identity column: value} for every index row (empty for a missing split)."""
    if split is None:
        return {}
    index = split.index
    columns = [c for c in index if c not in _PLACE and not c.startswith("offset_")]
    cells = {c: [_norm(v) for v in index[c]] for c in columns}
    return {str(key): {c: cells[c][i] for c in columns} for i, key in enumerate(index["key"])}


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields (``label``, ``pick``, stored field names) whose identity columns differ."""
    names = set()
    for column in set(old) | set(new):
        if old.get(column) != new.get(column):
            names.add(column.split("_", 1)[1] if column.startswith(("size_", "crc32_", "length_")) else column)
    return sorted(names)


def _payload(split: SplitShards, row: int, name: str, handles: dict[Path, int]) -> bytes:
    """The stored payload bytes of field ``name`` of index row ``row`` (pread by offset and size)."""
    path = split.directory / str(split.index["shard"][row])
    if path not in handles:
        handles[path] = os.open(path, os.O_RDONLY)
    size = int(split.index[f"size_{name}"][row])
    data = os.pread(handles[path], size, int(split.index[f"offset_{name}"][row]))
    if len(data) != size:
        raise ShardIntegrityError(f"{path}: short read of {name} of {split.index['key'][row]} "
                                  f"({len(data)} of {size} bytes)")
    return data


def _exact_changes(old: SplitShards, new: SplitShards, keys: list[str]) -> dict[str, list[str]]:
    """key -> fields whose payload bytes differ, for ``keys`` whose (size, crc32) agree on both sides."""
    rows_old = {str(k): i for i, k in enumerate(old.index["key"])}
    rows_new = {str(k): i for i, k in enumerate(new.index["key"])}
    fields = sorted(c[len("offset_"):] for c in old.index if c.startswith("offset_") and c in new.index)
    handles: dict[Path, int] = {}
    changed: dict[str, list[str]] = {}
    try:
        for key in keys:
            differ = [f for f in fields if _payload(old, rows_old[key], f, handles)
                      != _payload(new, rows_new[key], f, handles)]
            if differ:
                changed[key] = differ
    finally:
        for handle in handles.values():
            os.close(handle)
    return changed


def diff_rows(old: SplitShards | None, new: SplitShards | None, exact: bool = False) -> dict[str, Any]:
    """Keys added, removed and changed between two versions of one split (either may be None: absent).

    Returns:
        ``{"added": [key], "removed": [key], "changed": {key: [field]}, "exact_checked": int}``, keys sorted;
        ``exact_checked`` counts the rows whose payload bytes were compared (0 without ``exact``).
    """
    ids_old, ids_new = _identities(old), _identities(new)
    common = sorted(set(ids_old) & set(ids_new))
    changed = {k: _what_changed(ids_old[k], ids_new[k]) for k in common if ids_old[k] != ids_new[k]}
    same = [k for k in common if k not in changed]
    if exact and old is not None and new is not None:
        changed.update(_exact_changes(old, new, same))
    return {"added": sorted(set(ids_new) - set(ids_old)), "removed": sorted(set(ids_old) - set(ids_new)),
            "changed": dict(sorted(changed.items())), "exact_checked": len(same) if exact else 0}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict flattened to dotted paths (lists and scalars are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def dict_changes(old: Any, new: Any) -> dict[str, dict[str, Any]]:
    """Dotted path -> ``{"old": a, "new": b}`` for every leaf that differs (None where a side lacks it)."""
    flat_old, flat_new = _flat(old or {}), _flat(new or {})
    return {k: {"old": flat_old.get(k), "new": flat_new.get(k)}
            for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k)}


def _schema(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in ("features", "codecs", "label_field") if k in manifest}


def _labels(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in ("class_counts", "label_summary", "unlabeled") if k in manifest}


def skip_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The two skip reports side by side: counts, ``skipped_by_reason`` (old, new) and skipped keys +/-.

    Args:
        old, new: the manifests' ``report`` blocks (``{}`` for an absent split).
    """
    counts = {k: {"old": old.get(k), "new": new.get(k)} for k in ("raw", "written", "skipped", "ignored")}
    by_old, by_new = old.get("skipped_by_reason", {}), new.get("skipped_by_reason", {})
    reasons = {r: {"old": by_old.get(r, 0), "new": by_new.get(r, 0)} for r in sorted(set(by_old) | set(by_new))}
    keys_old = {s["key"] for s in old.get("skips", [])}
    keys_new = {s["key"] for s in new.get("skips", [])}
    return {"counts": counts, "skipped_by_reason": reasons, "keys_added": sorted(keys_new - keys_old),
            "keys_removed": sorted(keys_old - keys_new),
            "differ": counts_differ(counts) or by_old != by_new or keys_old != keys_new}


def counts_differ(pairs: dict[str, dict[str, Any]]) -> bool:
    """True when any ``{"old": a, "new": b}`` pair differs."""
    return any(p["old"] != p["new"] for p in pairs.values())


def source_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Source fingerprint changes: release, number of raw files, files added/removed, files with a new sha256.

    The ``root`` the source was read from is not compared (the same release read from another folder is the
    same source).
    """
    files_old = {f["path"]: f.get("sha256") for f in old.get("files", [])}
    files_new = {f["path"]: f.get("sha256") for f in new.get("files", [])}
    out = {"release": dict_changes({"release": old.get("release")}, {"release": new.get("release")}),
           "files": {"old": len(files_old), "new": len(files_new)},
           "files_added": sorted(set(files_new) - set(files_old)),
           "files_removed": sorted(set(files_old) - set(files_new)),
           "sha256_changed": sorted(p for p in set(files_old) & set(files_new) if files_old[p] != files_new[p])}
    out["differ"] = bool(out["release"] or out["files_added"] or out["files_removed"] or out["sha256_changed"])
    return out


def diff_split(old: SplitShards | None, new: SplitShards | None, exact: bool = False) -> dict[str, Any]:
    """Everything that changed in one split: rows, labels, schema, params and skips (only rows and sizes for a
    split that one side lacks)."""
    m_old, m_new = (s.manifest if s is not None else {} for s in (old, new))
    rows = diff_rows(old, new, exact)
    sizes = {k: {"old": m_old.get(k), "new": m_new.get(k)} for k in ("samples", "rows")}
    sizes["shards"] = {"old": len(m_old.get("shards", [])), "new": len(m_new.get("shards", []))}
    present = {"old": old is not None, "new": new is not None}
    if not all(present.values()):  # a split only one side has: its keys and sizes say it all
        return {"present": present, **sizes, **rows, **{part: {} for part in _PARTS}}
    return {"present": present, **sizes, **rows,
            "classes": dict_changes(_labels(m_old), _labels(m_new)),
            "schema": dict_changes(_schema(m_old), _schema(m_new)),
            "params": dict_changes(m_old.get("params"), m_new.get("params")),
            "skips": skip_changes(m_old.get("report", {}), m_new.get("report", {}))}


def diff(old: str | Path, new: str | Path, exact: bool = False) -> dict[str, Any]:
    """Compare two shard outputs (corpus folders, or split folders); see the module docstring.

    Returns:
        :func:`diff_sides` of the two folders' splits.

    Raises:
        ShardIntegrityError: a side is missing, holds no finished split, or its index disagrees with its manifest.
    """
    return diff_sides(open_side(old, "OLD"), open_side(new, "NEW"), exact)


def diff_sides(old: dict[str, SplitShards], new: dict[str, SplitShards], exact: bool = False) -> dict[str, Any]:
    """Compare two opened shard outputs (split name -> split; each side holds at least one split).

    Returns:
        A JSON-able dict: ``added`` / ``removed`` / ``changed`` (sorted ``<split>/<key>`` strings over all
        splits), ``splits`` (split -> :func:`diff_split` without its key lists), ``classes``, ``schema``,
        ``params``, ``skips`` (split -> that part of :func:`diff_split`), ``source`` (:func:`source_changes` of
        the first split of each side: one build records one fingerprint in every split), ``exact`` and
        ``identical``.
    """
    sides = old, new
    names = sorted(set(sides[0]) | set(sides[1]))
    per_split = {s: diff_split(sides[0].get(s), sides[1].get(s), exact) for s in names}
    out: dict[str, Any] = {k: [] for k in _KEY_LISTS}
    out["splits"] = {}
    for split, result in per_split.items():
        _collect(out, split, result)
    for part in _PARTS:
        out[part] = {s: r[part] for s, r in per_split.items() if r[part] and (part != "skips" or r[part]["differ"])}
    firsts = [next(iter(side.values())).manifest.get("source", {}) for side in sides]
    out["source"] = source_changes(*firsts)
    out["exact"] = exact
    out["identical"] = not (any(out[k] for k in _KEY_LISTS + _PARTS) or out["source"]["differ"]
                            or any(not all(r["present"].values()) for r in out["splits"].values()))
    return out


def _collect(out: dict[str, Any], split: str, result: dict[str, Any]) -> None:
    """Move one split's key lists into ``out`` as ``<split>/<key>`` and its counts into ``out["splits"]``."""
    changed = result["changed"]
    out["added"] += [f"{split}/{k}" for k in result["added"]]
    out["removed"] += [f"{split}/{k}" for k in result["removed"]]
    out["changed"] += [f"{split}/{k}" for k in changed]
    summary = {k: v for k, v in result.items() if k not in _KEY_LISTS + _PARTS}
    summary.update({k: len(result[k]) for k in _KEY_LISTS})
    summary["changed_fields"] = {f"{split}/{k}": v for k, v in changed.items()}
    out["splits"][split] = summary
