"""6.5 Video (CREMA-D's FLV files): decoding rules of mmdata.modalities.video."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from mmdata.corpora import crema_d
from mmdata.modalities import guard, video
from mmdata.errors import SampleError
from mmdata.synth.crema_d import write_flv
from tests.faults._helpers import crema_clip


@pytest.fixture
def clip(tmp_path):
    """A 3 s FLV at 10 fps whose frames differ (so a frame count tells which were decoded)."""
    path = tmp_path / "1001_DFA_ANG_XX.flv"
    write_flv(path, np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8), fps=10.0)
    return path


def test_vid_05_a_clip_longer_than_the_limit_is_too_long_before_decoding(clip):
    """VID-05: duration (frames / rate, from the container) above ``max_seconds`` is a ``too_long`` skip;
    under it, frames are sampled at ``fps`` and resized to bounded memory."""
    assert video.read(clip, fps=1.0, size=32, max_seconds=10.0).shape == (3, 32, 32, 3)
    with pytest.raises(SampleError) as err:
        video.read(clip, fps=1.0, size=32, max_seconds=2.0)
    assert err.value.reason == "too_long" and clip.name in str(err.value)


def test_vid_03_zero_or_nan_frame_rate_is_bad_fps(clip, monkeypatch):
    """VID-03 (partly): a container reporting 0 or NaN fps is a ``bad_fps`` skip, never a division by zero.
    (The rate is forced through decord: no encoder writes such a file.)"""
    import decord

    real = decord.VideoReader
    for rate in (0.0, float("nan")):
        class Broken(real):
            def get_avg_fps(self, _rate=rate):
                return _rate

        monkeypatch.setattr(decord, "VideoReader", Broken)
        with pytest.raises(SampleError) as err:
            video.read(clip, fps=1.0, size=32, max_seconds=10.0)
        assert err.value.reason == "bad_fps" and clip.name in str(err.value)


def test_vid_01_header_only_file_is_no_frames(clip, tmp_path):
    """VID-01: the first 13 bytes of an FLV (header, no tags) open to zero frames or fail to open: ``no_frames``."""
    empty = tmp_path / "empty.flv"
    empty.write_bytes(clip.read_bytes()[:13])
    with pytest.raises(SampleError) as err:
        video.read(empty, fps=1.0, size=32, max_seconds=10.0)
    assert err.value.reason == "no_frames" and "empty.flv" in str(err.value)


def test_vid_02_truncated_clip_is_truncated_video(clip):
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError) as err:
        video.read(clip, fps=1.0, size=32, max_seconds=10.0)
    assert err.value.reason == "truncated_video"


def test_vid_04_a_hanging_or_crashing_decoder_is_a_named_skip_and_reading_goes_on(clip):
    """VID-04: with a timeout, decoding runs in a worker process: a call that hangs is a ``timeout`` skip, a worker
    that dies (here killed, as the kernel's OOM killer or a segfault would) a ``decoder_crash`` skip; each stops
    the worker and the next clip is decoded by a fresh one. Skips of the decode itself come back unchanged."""
    try:
        with pytest.raises(SampleError) as err:
            guard.call(time.sleep, (60,), 1.0, "hang.flv")
        assert err.value.reason == "timeout" and "hang.flv" in str(err.value)
        with pytest.raises(SampleError) as err:
            guard.call(signal.raise_signal, (signal.SIGKILL,), 60.0, "crash.flv")
        assert err.value.reason == "decoder_crash" and "crash.flv" in str(err.value)
        np.testing.assert_array_equal(video.read(clip, fps=1.0, size=32, max_seconds=10.0, timeout=60.0),
                                      video.read(clip, fps=1.0, size=32, max_seconds=10.0))
        with pytest.raises(SampleError) as err:
            video.read(clip, fps=1.0, size=32, max_seconds=2.0, timeout=60.0)
        assert err.value.reason == "too_long" and clip.name in str(err.value)
        with pytest.raises(ValueError, match="positive"):
            video.read(clip, fps=1.0, size=32, max_seconds=10.0, timeout=0.0)
    finally:
        guard.stop()


def test_vid_04_crema_d_decode_timeout_gives_the_same_samples(tmp_path):
    """VID-04: CREMA-D's ``decode_timeout`` option decodes in the worker; the samples are the same."""
    root = tmp_path / "raw"
    crema_clip(root, "1003_IEO_HAP_LO")
    try:
        (plain,) = crema_d.iter_samples(root, "train")
        (guarded,) = crema_d.iter_samples(root, "train", decode_timeout=60.0)
    finally:
        guard.stop()
    np.testing.assert_array_equal(plain["video"], guarded["video"])

