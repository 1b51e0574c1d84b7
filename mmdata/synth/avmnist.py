"""Synthetic mini AV-MNIST in MultiBench's exact on-disk layout, with signal that needs both modalities.

Layout written under ``out`` (as untarred from MultiBench's ``avmnist.tar.gz``, see corpora.md section 5)::

    image/train_data.npy   [n_train, 784]       float64, PCA-reconstruction-like pixels, roughly 0..255
    image/test_data.npy    [n_test, 784]
    audio/train_data.npy   [n_train, 112, 112]  uint8 spectrogram images, 0..255
    audio/test_data.npy    [n_test, 112, 112]
    train_labels.npy       [n_train]            uint8 digits 0-9
    test_labels.npy        [n_test]

Signal design: some signal in one modality only, some needing both. A digit ``y`` is split into
``a = y % 5`` and ``b = y // 5``:

- The image carries ``a`` only: one of five stroke templates (ring, vertical, horizontal, "/", "\\"), randomly
  shifted by up to 3 px, scaled, noised and blurred (blurring mimics the PCA reconstruction of the real files,
  which keeps only ~25% of the variance). Image alone therefore tops out at ~50% accuracy (it cannot tell ``y``
  from ``y + 5``).
- The spectrogram carries ``b``: a harmonic stack whose spacing (9 or 15 frequency rows) names ``b``, at a random
  time and length over time-varying background noise. It also carries a weak cue for ``a``: a faint high tone
  whose pitch names ``a``, present on only ~10% of samples. Audio alone thus reaches ~20-30%.
- Together the two give ``y = a + 5 * b``: late fusion reaches ~90% and beats either modality clearly.

Labels are exactly balanced when the size is a multiple of 10 (MNIST is nearly balanced), in random order.
Every random draw comes from ``make_rng(seed, "avmnist", split, purpose)``, so a split's files depend only on the
seed and that split's size, and the same seed writes byte-identical files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmdata.errors import ConfigError
from mmdata.rng import make_rng

#: Largest template shift in pixels; templates are drawn on a canvas this much larger on every side.
MAX_SHIFT = 3
#: Harmonic spacing (frequency rows) of the spectrogram's stack, indexed by ``b = y // 5``.
HARMONIC_SPACING = (9.0, 15.0)
#: Share of spectrograms carrying the faint tone whose pitch names ``a = y % 5`` (the rest have no tone).
TONE_CUE_RATE = 0.1
#: Binomial blur taps (sum 64), a Gaussian of sigma sqrt(6) / 2 = 1.22 px in whole numbers: no ``np.exp`` for the
#: weights, which numpy computes with other roundings on AVX-512 CPUs (see :func:`_blur_axis`).
BLUR_TAPS = (1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0)


def generate(out: Path, *, seed: int = 0, train: int = 600, test: int = 200) -> Path:
    """Write a synthetic AV-MNIST in MultiBench's layout under ``out``.

    Args:
        out: root folder to create (the folder MultiBench's ``get_dataloader`` takes).
        seed: base seed; the same seed gives byte-identical files.
        train: rows of the training arrays (the reader keeps the last ``train // 12`` as valid).
        test: rows of the test arrays.

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.avmnist`.

    Raises:
        ValueError: ``train < 12`` (the valid split would be empty) or ``test < 1``.
    """
    if train < 12 or test < 1:
        raise ConfigError(f"need train >= 12 (valid = last train // 12 rows) and test >= 1, got {train}, {test}")
    out = Path(out)
    for split, n in (("train", train), ("test", test)):
        labels = _labels(make_rng(seed, "avmnist", split, "labels"), n)
        _save(out / "image" / f"{split}_data.npy", _images(make_rng(seed, "avmnist", split, "image"), labels))
        _save(out / "audio" / f"{split}_data.npy",
              _spectrograms(make_rng(seed, "avmnist", split, "audio"), labels))
        _save(out / f"{split}_labels.npy", labels)
    return out


def _save(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=False)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Digits ``[n]`` uint8 (the real files' dtype), balanced to within one per class, shuffled."""
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)


def _templates() -> np.ndarray:
    """The five stroke templates ``[5, 28 + 2*MAX_SHIFT, 28 + 2*MAX_SHIFT]``, intensity 0..1, centred."""
    size = 28 + 2 * MAX_SHIFT
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2
    radius = np.sqrt(rows * rows + cols * cols)  # sqrt is correctly rounded everywhere; libm's hypot need not be
    half = 9.0  # half-length of the line strokes, in pixels
    distances = [
        np.abs(radius - 8.0),                                                # ring ("0")
        np.where(np.abs(rows) <= half, np.abs(cols), radius),                # vertical bar
        np.where(np.abs(cols) <= half, np.abs(rows), radius),                # horizontal bar
        _segment_distance(rows, cols, half, +1.0),                           # "/"
        _segment_distance(rows, cols, half, -1.0),                           # "\"
    ]
    # Anti-aliased strokes 3 px wide, so that sub-pixel structure survives the blur.
    return np.stack([np.clip(2.5 - d, 0.0, 1.0) for d in distances])


def _segment_distance(rows: np.ndarray, cols: np.ndarray, half: float, slope: float) -> np.ndarray:
    """Distance of each pixel to the diagonal segment through the centre with the given slope (+1 or -1)."""
    along = (cols - slope * rows) / np.sqrt(2.0)
    across = (cols + slope * rows) / np.sqrt(2.0)
    beyond = np.clip(np.abs(along) - half, 0.0, None)
    return np.sqrt(across * across + beyond * beyond)


def _blur_axis(values: np.ndarray, axis: int) -> np.ndarray:
    """:data:`BLUR_TAPS` along ``axis`` of ``[n, 28, 28]``, renormalised where taps fall off the image.

    Shifted sums in a fixed order, not a matrix product: a BLAS product's rounding depends on the kernel
    (``OPENBLAS_CORETYPE=Haswell`` and ``=Prescott`` wrote different files), and these floats are stored as they are.
    """
    moved = np.moveaxis(values, axis, -1)
    reach, size = len(BLUR_TAPS) // 2, moved.shape[-1]
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(reach, reach)])
    inside = np.pad(np.ones(size), reach)
    total, weight = np.zeros(moved.shape), np.zeros(size)
    for k, tap in enumerate(BLUR_TAPS):
        total = total + tap * padded[..., k:k + size]
        weight = weight + tap * inside[k:k + size]  # whole numbers: exact
    return np.moveaxis(total / weight, -1, axis)


def _blur(pixels: np.ndarray) -> np.ndarray:
    """Separable binomial blur of ``[n, 28, 28]``: rows, then columns."""
    return _blur_axis(_blur_axis(pixels, 1), 2)


def _images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Flattened images ``[n, 784]`` float64 carrying ``labels % 5`` only.

    Values are unclipped (slightly below 0 or above 255 at times), as in PCA reconstructions.
    """
    n = len(labels)
    windows = sliding_window_view(_templates(), (28, 28), axis=(1, 2))  # [5, 7, 7, 28, 28]
    shifts = rng.integers(0, 2 * MAX_SHIFT + 1, size=(2, n))
    strokes = windows[labels % 5, shifts[0], shifts[1]]  # [n, 28, 28]
    amplitude = rng.uniform(150.0, 250.0, size=(n, 1, 1))
    pixels = amplitude * strokes + rng.normal(0.0, 70.0, size=(n, 28, 28))
    pixels = _blur(pixels)
    return pixels.reshape(n, 784) + rng.normal(0.0, 8.0, size=(n, 1))  # per-image brightness offset


def _spectrograms(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Spectrogram images ``[n, 112 freq, 112 time]`` uint8 (row 0 = highest frequency, as matplotlib draws).

    The harmonic stack carries ``labels // 5``; the faint tone carries ``labels % 5`` on a few samples only
    (a tone that is absent, not one at a random pitch, so the cue adds no noise where it is missing).
    """
    n = len(labels)
    envelope = _envelopes(rng, n)  # [n, 112 time]
    stack = _harmonic_profiles(rng, labels // 5)  # [n, 112 freq]
    present = (rng.random(n) < TONE_CUE_RATE)[:, None]
    tone = 30.0 * _bands(8.0 + 6.0 * (labels[:, None] % 5), present.astype(np.float64), width=1.0)  # [n, 112]
    signal = (stack + tone)[:, :, None] * envelope[:, None, :]
    return np.clip(np.rint(_background(rng, n) + signal), 0, 255).astype(np.uint8)


def _bands(centres: np.ndarray, amplitudes: np.ndarray, width: float) -> np.ndarray:
    """Sum of Gaussian frequency bands ``[n, 112]`` from centres and amplitudes ``[n, k]`` (rows)."""
    freq = np.arange(112.0)
    peaks = np.exp(-0.5 * ((freq[None, None, :] - centres[:, :, None]) / width) ** 2)
    return (amplitudes[:, :, None] * peaks).sum(axis=1)


def _harmonic_profiles(rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
    """Frequency profiles ``[n, 112]`` of a harmonic stack whose spacing is ``HARMONIC_SPACING[group]``."""
    n, k = len(groups), np.arange(1, 8)
    # A per-sample pitch jitter moves higher harmonics further, like different speakers.
    spacing = np.asarray(HARMONIC_SPACING)[groups] * rng.uniform(0.97, 1.03, size=n)
    centres = 111.0 - spacing[:, None] * k[None, :]  # low frequencies sit at the bottom rows
    amplitudes = rng.uniform(130.0, 190.0, size=(n, 1)) * 0.8 ** k[None, :]
    amplitudes = np.where(centres >= 0, amplitudes, 0.0)  # harmonics above the top row are cut off
    return _bands(centres, amplitudes, width=1.5)


def _envelopes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Utterance loudness over time ``[n, 112]``: a raised-sine bump at a random start and length."""
    start = rng.integers(0, 45, size=(n, 1))
    length = rng.integers(40, 66, size=(n, 1))
    phase = (np.arange(112)[None, :] - start) / length
    return np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * np.clip(phase, 0, 1)) ** 0.5, 0.0)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Background noise ``[n, 112, 112]``: a loudness that drifts over time, louder at low frequencies."""
    steps = rng.normal(0.0, 4.0, size=(n, 112)).cumsum(axis=1)  # random walk over time columns
    drift = steps - steps.mean(axis=1, keepdims=True)
    tilt = np.linspace(0.6, 1.4, 112)[None, :, None]  # per frequency row, top to bottom
    white = rng.normal(0.0, 14.0, size=(n, 112, 112))
    return 45.0 + tilt * (drift[:, None, :] + white)
