"""The index against the tars: every row's member offsets, sizes, crc32, key and label re-derived from the shards.

The random-access reader trusts ``index.parquet`` for where each member lies and what its label is (samplers
and few-shot subsets read labels from the index alone), so a flipped label or a swapped checksum in the index
would go unnoticed by a shard hash. Here the tars are walked with :mod:`tarfile` and each row is compared with
what the tar really holds. Labels are re-derived from the stored label member by the writer's own rule,
:func:`mmdata.shards.index.index_label`.
"""
from __future__ import annotations

import math
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import CodecError
from mmdata.shards.codec import decode
from mmdata.shards.index import index_label
from mmdata.shards.manifest import INDEX, manifest_features
from mmdata.types import Features, Field

#: Problems listed per split before the rest are only counted (a systematic fault would flood the output).
MAX_PROBLEMS = 20
_COLUMNS = ("offset", "size", "crc32")


def audit_index(directory: Path, manifest: dict[str, Any], index: dict[str, np.ndarray]) -> list[str]:
    """Every disagreement between a split's index and its tars (empty list: they agree).

    Args:
        directory: the split folder.
        manifest: its manifest (features, label field, view, shard list).
        index: its index columns (:func:`mmdata.shards.index.read_index`).
    """
    features = manifest_features(manifest)
    label, view = manifest["label_field"], manifest.get("view")
    needed = ["key", "sample", "shard", "label", *(f"{c}_{n}" for n in features for c in _COLUMNS)]
    if view:
        needed.append("pick" if view["kind"] == "pick" else "start")
    missing = [c for c in needed if c not in index]
    if missing:
        return [f"{directory / INDEX}: lacks columns {missing}"]
    problems = _key_problems(directory / INDEX, index, view is not None)
    listed = {s["name"] for s in manifest["shards"]}
    rows: dict[str, list[int]] = {}
    for i, shard in enumerate(index["shard"]):
        rows.setdefault(str(shard), []).append(i)
    problems += [f"{directory / INDEX}: {len(r)} rows name shard {s}, which the manifest does not list"
                 for s, r in sorted(rows.items()) if s not in listed]
    for name in sorted(listed):
        if (directory / name).is_file():  # a missing shard is reported by the shard checks
            problems += _audit_shard(directory / name, rows.get(name, []), index, features, label, view)
    return _capped(problems)


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more index problems"]


def _key_problems(path: Path, index: dict[str, np.ndarray], viewed: bool) -> list[str]:
    """Duplicate keys, and keys that do not belong to their stored sample (``<sample>`` or ``<sample>/<id>``)."""
    problems = [f"{path}: key {k} appears {n} times" for k, n in Counter(map(str, index["key"])).items() if n > 1]
    for key, sample in zip(map(str, index["key"]), map(str, index["sample"])):
        # A viewed row is keyed <sample>/<row id>; an ordinary row is keyed as its sample.
        belongs = len(key) > len(sample) + 1 and key.startswith(sample + "/") if viewed else key == sample
        if not belongs:
            problems.append(f"{path}: key {key} does not belong to stored sample {sample}")
    return problems


def _members(path: Path, label_suffix: str) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Member name -> (payload offset, size, crc32, payload if it is a label member) of a tar shard."""
    out = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""
            keep = data if member.name.endswith(label_suffix) else None
            out[member.name] = (member.offset_data, member.size, zlib.crc32(data), keep)
    return out


def _audit_shard(path: Path, rows: list[int], index: dict[str, np.ndarray], features: Features, label: str,
                 view: dict[str, Any] | None) -> list[str]:
    """Problems of one shard's index rows: member placement and checksums, labels, unreferenced members."""
    suffix = f".{label}.{features[label].codec}"
    try:
        members = _members(path, suffix)
    except (tarfile.TarError, OSError):
        return []  # the shard checks already report an unreadable tar
    problems, seen, labels = [], set(), {}
    for i in rows:
        key, sample = str(index["key"][i]), str(index["sample"][i])
        for name in sorted(features):
            member = f"{sample}.{name}.{features[name].codec}"
            seen.add(member)
            if member not in members:
                problems.append(f"{path}: sample {key} field {name}: member {member} is not in the tar")
                continue
            for column, truth in zip(_COLUMNS, members[member][:3]):
                got = int(index[f"{column}_{name}"][i])
                if got != truth:
                    problems.append(f"{path}: sample {key} field {name}: index {column} {got}, the tar holds {truth}")
        if sample + suffix in members:
            problems += _label_problem(path, key, i, index, members[sample + suffix][3], features[label], view,
                                       labels.setdefault(sample, {}))
    problems += [f"{path}: member {m} is not in the index" for m in sorted(set(members) - seen)]
    return problems


def _label_problem(path: Path, key: str, i: int, index: dict[str, np.ndarray], payload: bytes, field: Field,
                   view: dict[str, Any] | None, cache: dict[str, Any]) -> list[str]:
    """[problem] when row ``i``'s index label differs from the one its stored label member gives, else []."""
    try:
        stored = cache["value"] if "value" in cache else cache.setdefault("value", decode(payload, field))
        param = None if view is None else int(index["pick" if view["kind"] == "pick" else "start"][i])
        expected = index_label(stored, field, param)
    except (CodecError, IndexError, ValueError, TypeError) as exc:
        return [f"{path}: sample {key} field label: the stored label cannot be read for this row ({exc})"]
    got = index["label"][i]
    if _same(got, expected):
        return []
    shown = np.asarray(got).tolist() if np.ndim(got) else got
    return [f"{path}: sample {key}: index label {shown}, the stored label member says {expected}"]


def _same(got: Any, expected: Any) -> bool:
    """Index value equal to the expected label (NaN equals NaN; vectors element-wise, same length)."""
    try:
        if isinstance(expected, list):
            return np.array_equal(np.asarray(got, dtype=np.float64).ravel(), np.asarray(expected, dtype=np.float64))
        if isinstance(expected, float) and math.isnan(expected):
            return np.ndim(got) == 0 and math.isnan(float(got))
        return np.ndim(got) == 0 and float(got) == float(expected)
    except (TypeError, ValueError):
        return False
