"""Point-cloud kernels on ``[N, 3 + F]`` float arrays: xyz first, z up (VoteNet's upright depth frame).

Extra columns follow VoteNet's layout (optional rgb, then height above the floor as the last column), so
``heightnoise`` acts on the last column of clouds with four or more columns and is a no-op on bare xyz.
Rotation is right-handed about +z: ``x' = cos x - sin y``, ``y' = sin x + cos y``; z and the features stay.
"""
from __future__ import annotations

import math

import numpy as np

from mmdata.augment.base import Op, restore, symmetric, value_range

MAX_ANGLE = 30.0  # degrees about the up axis at strength 1 (VoteNet's +-pi/6; TupleInfoNCE chose 10)
MAX_JITTER = 0.01  # per-point std as a fraction of the cloud's extent at strength 1 (PointNet: 0.01)
JITTER_CLIP = 5.0  # jitter clipped at 5 std, as PointNet clips 0.05 for a 0.01 std
MAX_SCALE = 0.2  # uniform scale factor in 1 +- 0.2 at strength 1
MAX_HEIGHT_NOISE = 0.1  # height std as a fraction of the height range at strength 1
MAX_DROP = 0.5  # fraction of points replaced by duplicates of kept points at strength 1


def _checked(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim != 2 or value.shape[1] < 3:
        raise ValueError(f"a point cloud is [N, 3 + F] with xyz first, got {value.shape}")
    return value


def rotate_points(value: np.ndarray, *, angle: float) -> np.ndarray:
    """Rotate ``[N, 3 + F]`` by ``angle`` degrees about the up (z) axis."""
    value = _checked(value)
    out = np.array(value, copy=True)
    if angle == 0:
        return out
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    x, y = value[:, 0].astype(np.float64), value[:, 1].astype(np.float64)
    out[:, 0], out[:, 1] = c * x - s * y, s * x + c * y
    return out


def jitter_points(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Move every point by ``std * extent * clip(noise, +-5)``; ``noise`` standard normal ``[N, 3]``."""
    value = _checked(value)
    out = np.array(value, copy=True)
    if std == 0:
        return out
    extent = max(value_range(value[:, i]) for i in range(3))  # one scale for all axes keeps shapes
    out[:, :3] = restore(value[:, :3] + std * extent * np.clip(noise, -JITTER_CLIP, JITTER_CLIP), value)
    return out


def scale_points(value: np.ndarray, *, factor: float) -> np.ndarray:
    """Scale the xyz of ``[N, 3 + F]`` by ``factor`` about the origin; features unchanged."""
    value = _checked(value)
    out = np.array(value, copy=True)
    if factor != 1:
        out[:, :3] = restore(value[:, :3] * factor, value)
    return out


def heightnoise_points(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Add ``std * range * noise`` to the height (last) column of ``[N, >= 4]``; ``noise`` is ``[N]``."""
    value = _checked(value)
    out = np.array(value, copy=True)
    if std == 0 or value.shape[1] < 4:
        return out
    out[:, -1] = restore(value[:, -1] + std * value_range(value[:, -1]) * noise, value)
    return out


def subsample_points(value: np.ndarray, *, index: np.ndarray) -> np.ndarray:
    """Rows ``value[index]``: dropped points replaced by duplicates, so the cloud keeps ``N`` rows."""
    value = _checked(value)
    index = np.asarray(index)
    if index.shape != (len(value),):
        raise ValueError(f"subsample index must be [{len(value)}], got {index.shape}")
    return value[index]


def draw_rotate(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``angle`` uniform in ``+- strength * MAX_ANGLE`` degrees."""
    return {"angle": strength * MAX_ANGLE * symmetric(rng)}


def draw_jitter(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``std = strength * MAX_JITTER`` (of the extent) and standard-normal ``noise [N, 3]``."""
    return {"std": strength * MAX_JITTER,
            "noise": rng.standard_normal((np.shape(value)[0], 3), dtype=np.float32)}


def draw_scale(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``factor`` uniform in ``1 +- strength * MAX_SCALE``."""
    return {"factor": 1.0 + strength * MAX_SCALE * symmetric(rng)}


def draw_heightnoise(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``std = strength * MAX_HEIGHT_NOISE`` (of the height range) and standard-normal ``noise [N]``."""
    return {"std": strength * MAX_HEIGHT_NOISE, "noise": rng.standard_normal(np.shape(value)[0], dtype=np.float32)}


def draw_subsample(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """Drop each point with probability ``u * strength * MAX_DROP`` (u uniform); refill from kept points."""
    n = np.shape(value)[0]
    rate = MAX_DROP * strength * rng.random()
    dropped = rng.random(n) < rate
    kept = np.flatnonzero(~dropped)
    if n and not kept.size:  # never drop every point: keep the first
        dropped[0], kept = False, np.array([0])
    index = np.arange(n)
    index[dropped] = rng.choice(kept, size=int(dropped.sum())) if dropped.any() else index[dropped]
    return {"index": index}


OPS: dict[str, Op] = {
    "rotate_points": Op(rotate_points, draw_rotate),
    "jitter_points": Op(jitter_points, draw_jitter),
    "scale_points": Op(scale_points, draw_scale),
    "heightnoise_points": Op(heightnoise_points, draw_heightnoise),
    "subsample_points": Op(subsample_points, draw_subsample),
}
