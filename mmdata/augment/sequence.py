"""Feature-sequence and time-series kernels: ``feat [T, D]`` and ``series [T]`` / ``[T, D]`` (time first).

Pre-extracted features (MOSI's COVAREP, FACET, BERT) have per-dimension scales that differ by orders of
magnitude, so noise is relative to each dimension's own standard deviation over time in the sample, not to a
global range. No kernel reverses or reorders time: on prices that would change the label (reliability
AUG-06), and the Augmenter refuses ``reverse`` by name.
"""
from __future__ import annotations

import numpy as np

from mmdata.augment.base import Op, add_noise, draw_noise, draw_span, mask_axis

MAX_NOISE = 0.5  # Gaussian std as a fraction of each dimension's std at strength 1
MAX_TIME_MASK = 0.2  # one time mask up to 20% of the steps at strength 1


def dim_std(value: np.ndarray) -> np.ndarray:
    """Per-dimension standard deviation over time (axis 0), float64, keepdims; 0 for one step or constant."""
    x = np.asarray(value, dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros((1,) + x.shape[1:])
    std = x.std(axis=0, keepdims=True)
    return np.where(np.isfinite(std), std, 0.0)


def noise_feat(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Add ``std * dim_std * noise`` to ``[T, D]`` (or ``[T]``); ``noise`` standard normal of the same shape."""
    if std == 0:
        return np.array(value, copy=True)
    return add_noise(value, std * dim_std(value), noise)


def timemask_feat(value: np.ndarray, *, start: int, width: int, fill: float = 0.0) -> np.ndarray:
    """Set steps ``start:start + width`` of ``[T, D]`` to ``fill`` (0, the value of MOSI's padding)."""
    return mask_axis(value, start=start, width=width, axis=0, fill=fill)


def noise_series(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Add ``std * dim_std * noise`` to a series ``[T]`` or ``[T, D]``."""
    return noise_feat(value, std=std, noise=noise)


def draw_noise_seq(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``std = strength * MAX_NOISE`` (of each dimension's std) and a standard-normal field."""
    return draw_noise(rng, strength, value, MAX_NOISE)


def draw_timemask(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """One span of up to ``strength * MAX_TIME_MASK`` of the steps."""
    return draw_span(rng, strength, np.shape(value)[0], MAX_TIME_MASK)


OPS: dict[str, Op] = {
    "noise_feat": Op(noise_feat, draw_noise_seq),
    "timemask_feat": Op(timemask_feat, draw_timemask),
    "noise_series": Op(noise_series, draw_noise_seq),
}
