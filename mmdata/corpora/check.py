"""Schema checks every sample passes before it is written (shape, dtype, finite values, label range)."""
from __future__ import annotations

import numpy as np

from mmdata.types import Features, Field, Sample


class SampleError(ValueError):
    """A sample failed a check; ``reason`` is the short code that goes into the skip report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def check_value(name: str, value: object, spec: Field) -> None:
    """Raise SampleError unless ``value`` matches ``spec`` (dtype, shape, finiteness, value range)."""
    if spec.dtype == "str":
        if not isinstance(value, str):
            raise SampleError("dtype", f"field {name}: expected str, got {type(value).__name__}")
        if not value.strip():
            raise SampleError("empty_text", f"field {name}: empty text")
        return
    array = np.asarray(value)
    if array.dtype != np.dtype(spec.dtype):
        raise SampleError("dtype", f"field {name}: expected {spec.dtype}, got {array.dtype}")
    if array.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(array.shape, spec.shape)):
        raise SampleError("shape", f"field {name}: expected shape {spec.shape}, got {array.shape}")
    if any(array.shape[axis] == 0 for axis in spec.variable_axes):
        raise SampleError("empty", f"field {name}: zero-length variable axis, shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise SampleError("non_finite", f"field {name}: {bad} non-finite values")
    if spec.value_range is not None and array.size:
        low, high = spec.value_range
        if array.min() < low or array.max() > high:
            raise SampleError(
                "value_range", f"field {name}: values [{array.min()}, {array.max()}] outside [{low}, {high}]")
    if spec.classes is not None and not 0 <= int(array) < len(spec.classes):
        raise SampleError("label_range", f"field {name}: class {int(array)} not in 0..{len(spec.classes) - 1}")


def check_sample(sample: Sample, features: Features) -> None:
    """Raise SampleError unless ``sample`` has exactly the declared fields, each matching its Field."""
    names = set(sample) - {"__key__"}
    if names != set(features):
        missing, extra = sorted(set(features) - names), sorted(names - set(features))
        raise SampleError("fields", f"missing fields {missing}, unexpected fields {extra}")
    for name, spec in features.items():
        check_value(name, sample[name], spec)
