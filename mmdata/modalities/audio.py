"""WAV decoding with the bad-input rules, and the spectrogram features audio-visual methods train on.

Rules, in order (reliability.md 6.4): unreadable -> ``unreadable_audio``; zero frames -> ``empty_audio``; fewer
frames than the RIFF header's data chunk declares -> ``truncated_audio`` (libsndfile returns the frames present,
silently); NaN/inf samples -> ``non_finite``; shorter than ``min_seconds`` -> ``too_short``; longer than
``max_seconds`` -> ``too_long``; several channels -> repair ``downmix`` (mean); more than ``clip_fraction`` of the
samples at full scale -> repair ``clipped_audio`` (kept, flagged; values clipped to [-1, 1] as OGM-GE does); RMS
below ``silence_db`` dBFS -> ``silent_audio``. The waveform is resampled to ``sample_rate`` (soxr, librosa's
default); that counts as repair ``resample`` only when the file is not at the corpus's ``expected_rate``
(converting every clip to a model's rate is feature extraction, a wrong rate in one file is a fault). Rules test
properties, never file names, so the release's known broken clips (a silent one, a zero-length one, a minute-long
one) are caught as such.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mmdata.errors import SampleError

FULL_SCALE = 0.999  # int16 full scale is 32767 / 32768 = 0.99997
#: Data-chunk sizes that declare nothing: 0 and 0xFFFFFFFF are what streaming writers leave when the size was unknown.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class AudioRules:
    """Thresholds of the audio rules (see the module docstring)."""

    sample_rate: int = 22050
    expected_rate: int | None = None
    min_seconds: float = 0.2
    max_seconds: float = 10.0
    silence_db: float = -60.0
    clip_fraction: float = 0.01


def declared_frames(path: Path) -> int | None:
    """Frames the data chunk of a RIFF/WAVE file declares, from its header; None when the header does not say.

    None for another container (RF64, AIFF, ...), a header without ``fmt `` before ``data``, or an unknown size.
    """
    block_align = 0
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while len(chunk := handle.read(8)) == 8:
            ident, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if ident == b"data":
                return size // block_align if block_align and size not in _UNKNOWN_SIZES else None
            body = handle.read(min(size, 64)) if ident == b"fmt " else b""
            block_align = int.from_bytes(body[12:14], "little") if len(body) >= 14 else block_align
            handle.seek(size + (size & 1) - len(body), 1)  # chunks are padded to an even size
    return None


def load(path: Path, rules: AudioRules) -> tuple[np.ndarray, list[str]]:
    """A mono float32 waveform [samples] at ``rules.sample_rate`` and the repairs applied.

    Raises:
        SampleError: one of the skip rules of the module docstring.
    """
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise SampleError("unreadable_audio", f"{path.name}: {exc}") from exc
    if wave.shape[0] == 0:
        raise SampleError("empty_audio", f"{path.name}: zero audio frames")
    declared = declared_frames(path)
    if declared is not None and wave.shape[0] < declared:
        raise SampleError("truncated_audio", f"{path.name}: {wave.shape[0]} frames, the header declares {declared}")
    if not np.isfinite(wave).all():
        raise SampleError("non_finite", f"{path.name}: NaN or inf samples")
    seconds = wave.shape[0] / rate
    if seconds < rules.min_seconds or seconds > rules.max_seconds:
        reason = "too_short" if seconds < rules.min_seconds else "too_long"
        raise SampleError(reason, f"{path.name}: {seconds:.2f} s outside [{rules.min_seconds}, {rules.max_seconds}]")
    repairs = []
    if wave.shape[1] > 1:
        repairs.append("downmix")
    wave = wave.mean(axis=1)
    if np.mean(np.abs(wave) >= FULL_SCALE) > rules.clip_fraction:
        repairs.append("clipped_audio")
    wave = np.clip(wave, -1.0, 1.0)
    rms_db = 20 * np.log10(max(float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))), 1e-12))
    if rms_db < rules.silence_db:
        raise SampleError("silent_audio", f"{path.name}: RMS {rms_db:.1f} dBFS below {rules.silence_db}")
    if rate != rules.sample_rate:
        import librosa  # lazily: slow to import, and only needed here and for features

        wave = librosa.resample(wave, orig_sr=rate, target_sr=rules.sample_rate)
    if rules.expected_rate is not None and rate != rules.expected_rate:
        repairs.append("resample")
    return wave.astype(np.float32), repairs


def fixed_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """The waveform tiled and cut to exactly ``samples`` (OGM-GE tiles x3 and cuts to 3 s).

    OGM-GE's fixed x3 leaves clips under 1 s short and breaks the fixed shape (OGM-GE#1); tiling as often as
    needed keeps the shape for every clip the duration rules admit.
    """
    reps = -(-samples // len(wave))
    return np.tile(wave, reps)[:samples]


def frames(sample_rate: int, seconds: float, hop: int) -> int:
    """Spectrogram frames of a ``seconds`` clip (centred STFT, as librosa computes it)."""
    return 1 + round(seconds * sample_rate) // hop


def log_stft(wave: np.ndarray, sample_rate: int, *, seconds: float = 3.0, n_fft: int = 512,
             hop: int = 353) -> np.ndarray:
    """OGM-GE's audio input: ``log(|STFT| + 1e-7)`` of the clip tiled to ``seconds`` -> [n_fft/2 + 1, frames].

    With the defaults at 22,050 Hz this is OGM-GE's (257, 188) float32 array.
    """
    import librosa

    samples = fixed_length(wave, round(seconds * sample_rate))
    spec = np.abs(librosa.stft(np.clip(samples, -1, 1), n_fft=n_fft, hop_length=hop))
    return np.log(spec + 1e-7).astype(np.float32)


def log_mel(wave: np.ndarray, sample_rate: int, *, seconds: float = 3.0, n_fft: int = 512, hop: int = 353,
            n_mels: int = 64) -> np.ndarray:
    """``log(mel power + 1e-7)`` of the clip tiled to ``seconds`` -> [n_mels, frames] float32."""
    import librosa

    samples = fixed_length(wave, round(seconds * sample_rate))
    power = np.abs(librosa.stft(np.clip(samples, -1, 1), n_fft=n_fft, hop_length=hop)) ** 2  # [freq, frames]
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)  # [n_mels, freq]
    # librosa.feature.melspectrogram's own product is einsum(optimize=True), a BLAS call whose rounding depends on
    # the BLAS kernel and CPU; summing the products over frequency in a fixed order keeps the shards identical.
    mel = (basis[:, :, None] * power[None, :, :]).sum(axis=1)
    return np.log(mel + 1e-7).astype(np.float32)
