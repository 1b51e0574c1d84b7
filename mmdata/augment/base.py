"""Shared pieces of the augment kernels: the :class:`Op` record, dtype handling and value scales.

Every kernel computes in float32 and converts back with :func:`restore`, so a uint8 image stays uint8
(rounded half to even and clipped, exactly like ``torch.round``) and a float32 map stays float32.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Draw = Callable[[np.random.Generator, float, Any, dict], dict]
"""``draw(rng, strength, value, ctx) -> params``: the kernel's keyword arguments for one sample.

A draw reads only ``value.shape`` / ``value.dtype`` (the word count for text), never the values, so the
batched path can draw from shapes alone; ``ctx`` carries the time window context (``rate``, ``duration``).
"""


@dataclass(frozen=True)
class Op:
    """One registered augmentation: a pure kernel and the distribution of its parameters.

    Attributes:
        kernel: ``kernel(value, **params) -> new value``; never mutates ``value``, draws nothing.
        draw: see :data:`Draw`; at strength 0 it returns the kernel's identity parameters.
        group: "geometry" (rotate/crop/flip shared by image, depth, normal, label maps, video) or "time"
            (temporal crop shared by audio and video); None for per-field draws.
        changes_length: the kernel shortens the time axis (the only exception to "shape preserved") or, for
            text, the word count; later ops of the field draw against the new length.
        needs: "spectrogram" for ops that read a frequency axis (``[F, T]`` audio only), "waveform" for
            ops that are meaningful on waveforms only; the field name decides (``audio_spec`` is a spectrogram).
    """

    kernel: Callable[..., Any]
    draw: Draw
    group: str | None = None
    changes_length: bool = False
    needs: str | None = None


def to_float(value: np.ndarray) -> np.ndarray:
    """The value as float32 (a new array unless it already is float32)."""
    return np.asarray(value, dtype=np.float32)


def restore(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Cast a float result back to ``like``'s dtype: integers rounded half-to-even and clipped to the dtype."""
    dtype = np.asarray(like).dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return np.asarray(out, dtype=dtype)


def value_range(value: np.ndarray) -> float:
    """The scale noise is relative to: the dtype's span for integers, the sample's max - min for floats.

    A constant or empty float array has range 0 (noise of zero, never NaN: reliability AUG-02).
    """
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return float(info.max) - float(info.min)
    if array.size == 0:
        return 0.0
    span = float(array.max()) - float(array.min())
    return span if np.isfinite(span) else 0.0


def add_noise(value: np.ndarray, scale: float | np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``value + scale * noise`` in float32, cast back to the value's dtype.

    Args:
        value: any array.
        scale: the noise standard deviation in value units (a scalar or broadcastable array).
        noise: standard-normal float32 array of ``value.shape``.
    """
    noise = np.asarray(noise, dtype=np.float32)
    if noise.shape != np.shape(value):
        raise ValueError(f"noise shape {noise.shape} differs from the value's {np.shape(value)}")
    return restore(to_float(value) + np.asarray(scale, dtype=np.float32) * noise, value)


def draw_noise(rng: np.random.Generator, strength: float, value: Any, maximum: float) -> dict:
    """Parameters of a relative Gaussian noise: ``std = strength * maximum`` and a standard-normal field."""
    return {"std": float(strength * maximum), "noise": rng.standard_normal(np.shape(value), dtype=np.float32)}


def draw_span(rng: np.random.Generator, strength: float, length: int, maximum: float) -> dict:
    """A mask span on an axis of ``length``: width up to ``strength * maximum * length``, start uniform.

    The width is drawn first, then the start among the positions where the span fits (SpecAugment's order).
    """
    width = int(np.floor(strength * maximum * length * rng.random()))
    start = int(rng.integers(0, length - width + 1)) if length > 0 else 0
    return {"start": start, "width": width}


def mask_axis(value: np.ndarray, *, start: int, width: int, axis: int, fill: float = 0.0) -> np.ndarray:
    """A copy of ``value`` with ``width`` entries from ``start`` along ``axis`` set to ``fill``."""
    out = np.array(value, copy=True)
    if width > 0:
        index = [slice(None)] * out.ndim
        index[axis] = slice(start, start + width)
        out[tuple(index)] = fill
    return out


def symmetric(rng: np.random.Generator) -> float:
    """One uniform draw in [-1, 1)."""
    return float(rng.uniform(-1.0, 1.0))
