"""Row-level checks shared by every MOSI/MOSEI release: ids, labels, emotions and feature sequences."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from mmdata.errors import SampleError
from mmdata.modalities import text as text_io
from mmdata.types import Field, make_key

#: Sentiment range of both corpora (mean of annotators, -3 negative .. 3 positive).
SENTIMENT_RANGE = (-3.0, 3.0)
#: MOSEI emotion intensities (happy, sad, anger, surprise, disgust, fear), each in [0, 3].
EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
EMOTION_RANGE = (0.0, 3.0)
#: Fields whose ``-inf`` entries the releases' loaders set to 0 (COVAREP holds log(0) = -inf): MMSA's and
#: MulT's loaders do ``audio[audio == -np.inf] = 0`` and nothing else, so -inf elsewhere is ``non_finite``.
NEG_INF_FIELDS = ("feat_audio",)
_SDK_ID = re.compile(r"^(.+)\[(\d+)\]$")


def as_text(value: Any) -> str:
    """A str from a str or UTF-8 bytes value (pickles and HDF5 store either)."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def source_id(raw: Any) -> str:
    """``<video>_<clip>`` from any release's id.

    Accepts an MMSA id ``"video$_$clip"``, a MulT id row ``(b"video", b"clip", ...)`` and an SDK/MultiBench id
    ``"video[k]"`` where ``k`` is the 0-based segment row, i.e. clip ``k + 1`` (MOSI numbers clips from 1; this
    correspondence is our convention and UNVERIFIED on the real MultiBench files). Anything else is kept whole.
    """
    if isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.size >= 2:
        return f"{as_text(raw[0])}_{as_text(raw[1])}"
    text = as_text(raw)
    if "$_$" in text:
        return "_".join(text.split("$_$"))
    match = _SDK_ID.match(text)
    if match:
        return f"{match.group(1)}_{int(match.group(2)) + 1}"
    return text


def sample_key(corpus: str, split: str, raw: Any, row: int) -> str:
    """The sample key of a row; a row whose id has no usable character is keyed by its index."""
    try:
        return make_key(corpus, split, source_id(raw))
    except (ValueError, IndexError, TypeError):
        return make_key(corpus, split, f"row{row}")


def sentiment(value: Any) -> np.ndarray:
    """A 0-d float32 sentiment; SampleError ``label_range`` unless finite and in [-3, 3]."""
    label = np.asarray(value, dtype=np.float32).reshape(())
    low, high = SENTIMENT_RANGE
    if not np.isfinite(label) or not low <= float(label) <= high:
        raise SampleError("label_range", f"field label: {float(label)} is not a finite value in [-3, 3]")
    return label


def emotions(values: Any) -> np.ndarray:
    """The six MOSEI emotion intensities as float32 [6]; SampleError ``label_range`` outside [0, 3]."""
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    low, high = EMOTION_RANGE
    if array.shape != (len(EMOTIONS),) or not np.isfinite(array).all() or array.min() < low or array.max() > high:
        raise SampleError("label_range", f"field meta_emotions: {array.tolist()} not 6 finite values in [0, 3]")
    return array


def cast_repairs(dtype: Any) -> list[str]:
    """``["cast_<dtype>_to_float32"]`` for released features of another dtype than the stored float32, else [].

    The cast is what MMSA's and MulT's loaders do (``torch.FloatTensor``); recorded because float64 values lose
    precision in it (reliability FEA-02).
    """
    dtype = np.dtype(dtype)
    return [] if dtype == np.float32 else [f"cast_{dtype.name}_to_float32"]


def sequence(name: str, value: Any, spec: Field, length: int | None = None) -> tuple[np.ndarray, list[str]]:
    """A feature sequence as a float32 copy [time, dim] and the repairs applied (``neg_inf_to_zero``, a cast).

    Args:
        name: the field (``feat_text``, ``feat_audio``, ``feat_vision``).
        value: the released array [time, dim].
        spec: the field's schema; a fixed time axis must match, the dim always.
        length: the true length to keep (MMSA ``*_lengths``), or None to keep every step.

    Raises:
        SampleError: ``shape``, ``length`` (0 or past the padding), ``non_finite`` (NaN, +inf, or -inf in
            text) or ``empty_text`` (text features all zero: no word, the rows MultiBench's loader drops).
    """
    value = np.asarray(value)
    want_len, want_dim = spec.shape
    if value.ndim != 2 or value.shape[1] != want_dim or want_len not in (None, value.shape[0]):
        raise SampleError("shape", f"field {name}: expected shape {spec.shape}, got {value.shape}")
    if length is not None:
        if not 0 < length <= value.shape[0]:
            raise SampleError("length", f"field {name}: stored length {length}, padded length {value.shape[0]}")
        value = value[:length]
    repairs = cast_repairs(value.dtype)
    value = np.array(value, dtype=np.float32)  # a copy: cached releases stay untouched
    neg_inf = np.isneginf(value)
    bad = np.isnan(value) | np.isposinf(value)
    if name not in NEG_INF_FIELDS:
        bad |= neg_inf  # the -inf repair is what the loaders do for audio only
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise SampleError("non_finite", f"field {name}: {rows} of {len(value)} rows hold NaN or inf")
    if name == "feat_text" and not value.any():
        raise SampleError("empty_text", f"field {name}: all {len(value)} steps are zero (no words)")
    # MMSA, MulT and MultiBench all set audio -inf (log of 0) to 0 at load time; we do the same, counted.
    value[neg_inf] = 0.0
    return value, repairs + (["neg_inf_to_zero"] if neg_inf.any() else [])


def transcript(raw: Any, repairs: list[str] | None = None) -> str:
    """A transcript as str, with LF line ends (the repair appended to ``repairs``).

    Raises:
        SampleError: ``empty_text`` when blank, ``too_long`` above :data:`mmdata.modalities.text.MAX_TEXT_BYTES`.
    """
    text = as_text(raw) if isinstance(raw, (str, bytes, np.str_, np.bytes_)) else ""
    if not text.strip():
        raise SampleError("empty_text", f"field text: empty transcript ({raw!r})")
    return text_io.bounded_text(text, "field text", repairs)
