"""Schema checks every sample passes before it is written (shape, dtype, finite values, label range, view rows).

The writer runs them inside its shard tasks (:mod:`mmdata.shards.task`), so they run on every writing process.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from mmdata.errors import CodecError, SampleError
from mmdata.types import KEY_PATTERN, ROWS, Features, Field, Sample, View




def _check_text(name: str, value: object, spec: Field) -> None:
    texts = value if spec.shape else [value]  # shape (None,): a list of strings (e.g. SNLI-VE hypotheses)
    if spec.shape and (not isinstance(value, (list, tuple)) or not value):
        raise SampleError("dtype", f"field {name}: expected a non-empty list of str, got {type(value).__name__}")
    for text in texts:
        if not isinstance(text, str):
            raise SampleError("dtype", f"field {name}: expected str, got {type(text).__name__}")
        if not text.strip():
            raise SampleError("empty_text", f"field {name}: empty text")


def _decoded(name: str, value: object, spec: Field) -> object:
    """Source image bytes (stored as they are) decoded once here, so a corrupt file is skipped at write time."""
    if spec.codec in ("jpg", "png") and isinstance(value, (bytes, bytearray)):
        from mmdata.shards.codec import decode

        if not value:
            raise SampleError("empty_file", f"field {name}: zero-byte image")
        try:
            return decode(bytes(value), spec)
        except CodecError as exc:
            raise SampleError("decode_error", f"field {name}: {exc}") from exc
    return value


@dataclass(frozen=True)
class _Plan:
    """What :func:`check_value` needs of a Field, derived once per Field (the checks run on every sample)."""

    dtype: np.dtype
    shape: tuple[int | None, ...]
    fixed: bool  # no variable axis: the shape compares as one tuple
    variable_axes: tuple[int, ...]
    floating: bool
    value_range: tuple[float, float] | None  # None also when the dtype cannot leave it (uint8 in 0..255)
    classes: int | None
    unlabeled: int | None


@lru_cache(maxsize=256)
def _plan(spec: Field) -> _Plan:
    dtype = np.dtype(spec.dtype)
    within = spec.value_range is not None and _dtype_within(dtype, spec.value_range)
    return _Plan(dtype, spec.shape, not spec.variable_axes, spec.variable_axes, dtype.kind == "f",
                 None if within else spec.value_range, None if spec.classes is None else len(spec.classes),
                 spec.unlabeled)


def _dtype_within(dtype: np.dtype, value_range: tuple[float, float]) -> bool:
    """Whether every value of an integer dtype lies in ``value_range`` (uint8 in 0..255: no min/max needed)."""
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    return value_range[0] <= info.min and info.max <= value_range[1]


def check_value(name: str, value: object, spec: Field) -> None:
    """Raise SampleError unless ``value`` matches ``spec`` (dtype, shape, finiteness, value range)."""
    if spec.dtype == "str":
        _check_text(name, value, spec)
        return
    plan = _plan(spec)
    array = np.asarray(_decoded(name, value, spec))
    if array.dtype != plan.dtype:
        raise SampleError("dtype", f"field {name}: expected {spec.dtype}, got {array.dtype}")
    if array.shape != plan.shape and (plan.fixed or array.ndim != len(plan.shape) or any(
            want is not None and got != want for got, want in zip(array.shape, plan.shape))):
        raise SampleError("shape", f"field {name}: expected shape {spec.shape}, got {array.shape}")
    if any(array.shape[axis] == 0 for axis in plan.variable_axes):
        raise SampleError("empty", f"field {name}: zero-length variable axis, shape {array.shape}")
    if plan.floating and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise SampleError("non_finite", f"field {name}: {bad} non-finite values")
    if plan.value_range is not None and array.size:
        low, high = plan.value_range
        if array.min() < low or array.max() > high:
            raise SampleError(
                "value_range", f"field {name}: values [{array.min()}, {array.max()}] outside [{low}, {high}]")
    if plan.classes is not None and not _classes_hold(array, plan.classes, plan.unlabeled):
        raise SampleError("label_range", f"field {name}: class {array.tolist()} not in 0..{plan.classes - 1}")


def _classes_hold(array: np.ndarray, classes: int, unlabeled: int | None) -> bool:
    """Whether every value is a class id ``0 .. classes - 1`` or the declared "no label" value."""
    if array.ndim == 0:  # the common scalar label: plain int compares
        value = array.item()
        return 0 <= value < classes or value == unlabeled
    outside = (array < 0) | (array >= classes)
    if unlabeled is not None:
        outside &= array != unlabeled
    return not outside.any()


def check_sample(sample: Sample, features: Features) -> None:
    """Raise SampleError unless ``sample`` has exactly the declared fields, each matching its Field."""
    names = set(sample) - {"__key__"}
    if names != set(features):
        missing, extra = sorted(set(features) - names), sorted(names - set(features))
        raise SampleError("fields", f"missing fields {missing}, unexpected fields {extra}")
    for name, spec in features.items():
        check_value(name, sample[name], spec)


def check_rows(key: str, sample: Sample, rows: Any, view: View | None, features: Features, label: str) -> None:
    """Raise SampleError unless ``rows`` (a sample's ``__rows__``) fit the view: unique ids, valid labels,
    picks/windows in range; ValueError for rows given to a corpus without a view (a reader bug)."""
    if view is None:
        if rows is not None:
            raise ValueError(f"{key}: {ROWS} given but the corpus declares no View")
        return
    if not rows:
        raise SampleError("no_rows", f"{key}: the sample expands into no rows")
    ids = [str(row.get("id", "")) for row in rows]
    if len(set(ids)) != len(ids) or not all(KEY_PATTERN.match(f"{key}/{i}") for i in ids):
        raise SampleError("bad_row", f"{key}: row ids must be unique key parts, got {ids[:5]}")
    extent = min(len(sample[name]) for name in view.fields)
    for row in rows:
        check_value(f"{label} (row {row['id']})", np.asarray(row.get("label")).astype(features[label].dtype),
                    replace(features[label], shape=()))
        value = int(row.get(view.param, -1))
        top = extent - 1 if view.kind == "pick" else extent - view.length
        if not 0 <= value <= top:
            raise SampleError("bad_row", f"{key}/{row['id']}: {view.param} {value} outside 0..{top}")
