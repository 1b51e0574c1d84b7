"""Video kernels on ``[T, H, W, C]`` (or ``[T, H, W]``) frames.

The temporal crop belongs to the "time" group: the Augmenter draws one window in seconds and converts it
with each field's rate (video fps, audio sample rate), so a clip's frames and its sound stay aligned. The
spatial crop and flip belong to the "geometry" group and use the image conventions of
:mod:`mmdata.augment.image`, one box for every frame.
"""
from __future__ import annotations

import numpy as np

from mmdata.augment.audio import time_window
from mmdata.augment.base import Op, restore
from mmdata.augment.image import crop_box, crop_coords, draw_flip, draw_noise_image, noise_image, sample_grid


def _frames(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim not in (3, 4):
        raise ValueError(f"a video is [T, H, W] or [T, H, W, C], got {value.shape}")
    return value


def timecrop_video(value: np.ndarray, *, start: int, length: int) -> np.ndarray:
    """Frames ``start:start + length`` of ``[T, H, W, C]`` (shortens ``T``)."""
    return np.array(_frames(value)[start:start + length], copy=True)


def crop_video(value: np.ndarray, *, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop ``box = (top, left, height, width)`` from every frame and resize it back (bilinear)."""
    value = _frames(value)
    h, w = value.shape[1:3]
    if tuple(float(b) for b in box) == (0.0, 0.0, float(h), float(w)):
        return np.array(value, copy=True)
    # Frames ride along as trailing channels: one coordinate grid for the whole clip.
    out = sample_grid(np.moveaxis(value, 0, 2), *crop_coords(h, w, box))
    return restore(np.moveaxis(out, 2, 0), value)


def flip_video(value: np.ndarray, *, flip: bool) -> np.ndarray:
    """Mirror the columns of every frame when ``flip``."""
    value = _frames(value)
    return np.array(value[:, :, ::-1] if flip else value, copy=True)


def noise_video(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Add ``std * range * noise`` (see :func:`~mmdata.augment.image.noise_image`)."""
    return noise_image(_frames(value), std=std, noise=noise)


def draw_timecrop(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """A window from :func:`~mmdata.augment.audio.time_window` on the frame axis."""
    return time_window(rng, strength, np.shape(value)[0], ctx)


def draw_crop(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``box`` from :func:`~mmdata.augment.image.crop_box` on the frames' ``[H, W]``."""
    return {"box": crop_box(rng, strength, *np.shape(value)[1:3])}


OPS: dict[str, Op] = {
    "timecrop_video": Op(timecrop_video, draw_timecrop, "time", changes_length=True),
    "crop_video": Op(crop_video, draw_crop, "geometry"),
    "flip_video": Op(flip_video, draw_flip, "geometry"),
    "noise_video": Op(noise_video, draw_noise_image),
}
