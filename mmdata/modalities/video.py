"""Video decoding with decord: frames at a chosen rate, resized, with the bad-input rules.

Rules (reliability.md 6.5): a file decord cannot open, with zero frames, or whose frames fail to decode ->
``no_frames``; a frame rate that is not a positive finite number -> ``bad_fps``; fewer frames present than
:data:`MIN_PRESENT` of what the container's header declares (a file cut short: decord indexes the frames present
and says nothing) -> ``truncated_video``; longer than ``max_seconds`` -> ``too_long``. Frames are taken at times
``k / fps`` (k = 0, 1, ...) over the clip, the nearest decoded frame each (OGM-GE keeps every ``video fps /
fps``-th frame from the first), at least one. With a ``timeout``, the decode runs in a worker process
(:mod:`~mmdata.modalities.guard`): a clip decoding longer is ``timeout``, a decoder crash ``decoder_crash``.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmdata.modalities import guard
from mmdata.errors import SampleError

#: Share of the declared frames that must be present. The declared count is FFmpeg's, from the container's
#: duration and rate (FLV onMetaData, MP4 moov), which can disagree with the stream by a frame or two; a file cut
#: short loses far more. A cut in the last tenth of a clip goes unnoticed.
MIN_PRESENT = 0.9


def frame_indices(count: int, rate: float, fps: float) -> np.ndarray:
    """Indices of the frames nearest to ``k / fps`` seconds for every k inside a ``count``-frame clip."""
    duration = count / rate
    times = np.arange(max(1, int(np.ceil(duration * fps - 1e-9)))) / fps
    return np.unique(np.minimum(np.round(times * rate).astype(np.int64), count - 1))


def declared_frames(path: Path) -> int | None:
    """Frames the container declares, read by FFmpeg (through OpenCV) from its header; None when it does not say."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return int(count) if np.isfinite(count) and count > 0 else None


def read(path: Path, *, fps: float, size: int, max_seconds: float, timeout: float | None = None) -> np.ndarray:
    """Frames uint8 [T, size, size, 3] (RGB) at ``fps`` frames per second.

    Args:
        path: the video file.
        fps: frames kept per second; size: square frame side; max_seconds: longer clips are ``too_long``.
        timeout: None decodes here; seconds: decodes in a worker process (:mod:`~mmdata.modalities.guard`),
            where a clip taking longer is a ``timeout`` skip and a crashing decoder a ``decoder_crash`` skip.

    Raises:
        SampleError: ``no_frames``, ``bad_fps``, ``truncated_video``, ``too_long``; ``timeout``, ``decoder_crash``.
    """
    if timeout is None:
        return _read(path, fps, size, max_seconds)
    return guard.call(_read, (path, fps, size, max_seconds), timeout, path.name)


def _read(path: Path, fps: float, size: int, max_seconds: float) -> np.ndarray:
    """:func:`read` in this process."""
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
    declared = declared_frames(path)
    if declared is not None and count < MIN_PRESENT * declared:
        raise SampleError("truncated_video", f"{path.name}: {count} frames present, the container declares {declared}")
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
