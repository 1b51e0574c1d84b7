"""Audio kernels: waveforms ``[T]`` / ``[C, T]`` and spectrograms ``[F, T]``; time is always the last axis.

A field is a spectrogram when its name has a ``spec`` word after the modality (``audio_spec``,
``audio_spec_mel``): AV-MNIST's ``audio_spec`` is a uint8 ``[112, 112]`` spectrogram image (rows are
frequencies, highest first). Frequency masks need that axis, so they are refused on waveform fields; gain is
refused on spectrograms (on a dB or image spectrogram a product is a contrast change, not a gain).
Masks fill with 0 (torchaudio's default ``mask_value``); time shifts fill the vacated samples with 0.
"""
from __future__ import annotations

import numpy as np

from mmdata.augment.base import Op, draw_noise, draw_span, mask_axis, restore, symmetric, to_float
from mmdata.augment.image import noise_image

MAX_SHIFT = 0.1  # time shift up to 10% of the length at strength 1
MAX_GAIN_DB = 6.0  # gain uniform in +-6 dB at strength 1
MAX_NOISE = 0.1  # Gaussian std as a fraction of the value range at strength 1
MAX_TIME_MASK = 0.2  # one time mask up to 20% of the frames at strength 1
MAX_FREQ_MASK = 0.2  # one frequency mask up to 20% of the bins at strength 1
MIN_WINDOW = 0.5  # a temporal crop keeps at least half of the duration at strength 1


def is_spectrogram(name: str) -> bool:
    """Whether an audio field name marks a spectrogram ``[F, T]`` (a ``spec`` word after the modality)."""
    return "spec" in name.split("_")[1:]


def shift_audio(value: np.ndarray, *, shift: int) -> np.ndarray:
    """Delay (``shift > 0``) or advance ``[..., T]`` by ``shift`` steps, filling the vacated steps with 0."""
    out = np.zeros_like(value)
    n = value.shape[-1]
    if shift >= 0:
        out[..., shift:] = value[..., :max(n - shift, 0)]
    else:
        out[..., :max(n + shift, 0)] = value[..., -shift:]
    return out


def gain_audio(value: np.ndarray, *, gain_db: float) -> np.ndarray:
    """Multiply the amplitude of ``[..., T]`` by ``10 ** (gain_db / 20)`` (integers clipped).

    Registered for waveforms only: on dB or image spectrograms a product is a contrast change, not a gain
    (the kernel itself works on any array).
    """
    if gain_db == 0:
        return np.array(value, copy=True)
    return restore(to_float(value) * np.float32(10.0 ** (gain_db / 20.0)), value)


def noise_audio(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Add ``std * range * noise`` to a waveform or spectrogram (see :func:`~mmdata.augment.image.noise_image`)."""
    return noise_image(value, std=std, noise=noise)


def timemask_audio(value: np.ndarray, *, start: int, width: int, fill: float = 0.0) -> np.ndarray:
    """Set steps ``start:start + width`` of the last (time) axis to ``fill``."""
    return mask_axis(value, start=start, width=width, axis=-1, fill=fill)


def freqmask_audio(value: np.ndarray, *, start: int, width: int, fill: float = 0.0) -> np.ndarray:
    """Set frequency rows ``start:start + width`` of a spectrogram ``[F, T]`` (axis -2) to ``fill``."""
    if np.ndim(value) < 2:
        raise ValueError(f"a frequency mask needs a spectrogram [F, T], got shape {np.shape(value)}")
    return mask_axis(value, start=start, width=width, axis=-2, fill=fill)


def timecrop_audio(value: np.ndarray, *, start: int, length: int) -> np.ndarray:
    """Steps ``start:start + length`` of the last axis (shortens ``T``)."""
    return np.array(value[..., start:start + length], copy=True)


def time_window(rng: np.random.Generator, strength: float, n: int, ctx: dict) -> dict:
    """One temporal crop window converted to steps of a field with ``n`` steps.

    The window is drawn in seconds over the shared ``ctx["duration"]`` and converted with the field's
    ``ctx["rate"]`` (Hz or fps), so every field of the "time" group gets the same seconds. Without a context
    the field spans one time unit (rate = n), i.e. windows align as fractions of the length.
    """
    rate = float(ctx.get("rate") or n or 1)
    duration = float(ctx.get("duration", n / rate))
    keep = 1.0 - (1.0 - MIN_WINDOW) * strength * rng.random()
    begin = rng.random() * (1.0 - keep) * duration
    start = min(int(round(begin * rate)), max(n - 1, 0))
    return {"start": start, "length": max(1, min(n - start, int(round(keep * duration * rate))))}


def draw_shift(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``shift`` uniform in ``+- strength * MAX_SHIFT * T`` steps (rounded)."""
    return {"shift": int(round(strength * MAX_SHIFT * np.shape(value)[-1] * symmetric(rng)))}


def draw_gain(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``gain_db`` uniform in ``+- strength * MAX_GAIN_DB``."""
    return {"gain_db": strength * MAX_GAIN_DB * symmetric(rng)}


def draw_noise_audio(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``std = strength * MAX_NOISE`` (of the range) and a standard-normal field."""
    return draw_noise(rng, strength, value, MAX_NOISE)


def draw_timemask(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """One span of up to ``strength * MAX_TIME_MASK`` of the time axis."""
    return draw_span(rng, strength, np.shape(value)[-1], MAX_TIME_MASK)


def draw_freqmask(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """One span of up to ``strength * MAX_FREQ_MASK`` of the frequency axis."""
    return draw_span(rng, strength, np.shape(value)[-2], MAX_FREQ_MASK)


def draw_timecrop(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """A window from :func:`time_window` on the last axis."""
    return time_window(rng, strength, np.shape(value)[-1], ctx)


OPS: dict[str, Op] = {
    "shift_audio": Op(shift_audio, draw_shift),
    "gain_audio": Op(gain_audio, draw_gain, needs="waveform"),
    "noise_audio": Op(noise_audio, draw_noise_audio),
    "timemask_audio": Op(timemask_audio, draw_timemask),
    "freqmask_audio": Op(freqmask_audio, draw_freqmask, needs="spectrogram"),
    "timecrop_audio": Op(timecrop_audio, draw_timecrop, "time", changes_length=True),
}
