"""Video decoding with decord: frames at a chosen rate, resized, with the bad-input rules.

Rules (reliability.md 6.5): a file decord cannot open, with zero frames, or whose frames fail to decode ->
``no_frames``; a frame rate that is not a positive finite number -> ``bad_fps``; longer than
``max_seconds`` -> ``too_long``. Frames are taken at times ``k / fps`` (k = 0, 1, ...) over the clip, the
nearest decoded frame each (OGM-GE keeps every ``video fps / fps``-th frame from the first), at least one.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmdata.corpora.check import SampleError


def frame_indices(count: int, rate: float, fps: float) -> np.ndarray:
    """Indices of the frames nearest to ``k / fps`` seconds for every k inside a ``count``-frame clip."""
    duration = count / rate
    times = np.arange(max(1, int(np.ceil(duration * fps - 1e-9)))) / fps
    return np.unique(np.minimum(np.round(times * rate).astype(np.int64), count - 1))


def read(path: Path, *, fps: float, size: int, max_seconds: float) -> np.ndarray:
    """Frames uint8 [T, size, size, 3] (RGB) at ``fps`` frames per second.

    Raises:
        SampleError: ``no_frames``, ``bad_fps`` or ``too_long``.
    """
    import decord  # lazily: only audio-visual corpora need it

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        count, rate = len(reader), float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as exc:
        raise SampleError("no_frames", f"{path.name}: decord cannot open it ({str(exc).splitlines()[0]})") from exc
    if count == 0:
        raise SampleError("no_frames", f"{path.name}: no video frames")
    if not np.isfinite(rate) or rate <= 0:
        raise SampleError("bad_fps", f"{path.name}: frame rate {rate}")
    if count / rate > max_seconds:
        raise SampleError("too_long", f"{path.name}: {count / rate:.1f} s of video, more than {max_seconds}")
    try:
        batch = reader.get_batch(list(frame_indices(count, rate, fps))).asnumpy()
    except (decord.DECORDError, RuntimeError) as exc:
        raise SampleError("no_frames", f"{path.name}: frames fail to decode ({str(exc).splitlines()[0]})") from exc
    # INTER_AREA: the right filter for shrinking (no aliasing), frames are usually larger than ``size``.
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in batch])


def filmstrip(frames: np.ndarray) -> np.ndarray:
    """[T, S, S, 3] -> [T * S, S, 3]: frames stacked vertically, stored as one JPEG (see crema_d docs)."""
    return np.ascontiguousarray(frames.reshape(-1, *frames.shape[2:]))
