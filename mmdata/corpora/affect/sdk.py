"""The CMU-MultimodalSDK release: ``.csd`` sequences aligned to the opinion-segment labels.

Alignment follows the SDK's ``mmdataset.align`` with ``avg`` collapse, which is how the pickle releases were
made: a step of another sequence belongs to a reference interval when their overlap is longer than
:data:`EPSILON` (``__intersect_and_copy``), so a frame that only touches a boundary is not counted.

- ``aligned``: the words of a segment are the steps; each word's audio/vision value is the mean of the
  frames overlapping the word (a word no frame overlaps gets zeros, the SDK's ``impute(numpy.zeros)``,
  counted as repair ``impute_zero``); sequences are left-zero-padded to 50 steps and a longer segment keeps
  its last 50 words, as ``get_tensors(seq_len=50)`` does (counted as ``truncated_to_50``).
- ``unaligned``: every frame overlapping the segment, at its own rate, variable length (lengths in the index).

Segment ``k`` (0-based row of the labels sequence, the SDK's ``video[k]``) is keyed ``<video>_<k + 1>``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import h5py
import numpy as np

from mmdata.corpora.affect import rows, sdk_files
from mmdata.corpora.affect.spec import ALIGNED_LEN, AffectSpec, Located, Options
from mmdata.corpora.base import REPAIRS, Skip
from mmdata.errors import ConfigError, SampleError
from mmdata.types import Features, Field, Sample, make_key

#: Shortest overlap (seconds) that counts, as the SDK's align epsilon.
EPSILON = 1e-5
FIELDS = ("feat_text", "feat_audio", "feat_vision")


def sequences(loc: Located, spec: AffectSpec, options: Options) -> dict[str, sdk_files.Sequence]:
    """field or role -> sequence for the files under ``loc.path`` (vision by ``options.sdk_vision``)."""
    found = sdk_files.by_role(sdk_files.find(loc.path, ()), spec.title)
    if options.sdk_vision not in found:
        have = [r for r in ("facet42", "facet41", "openface") if r in found]
        raise ConfigError(f"{spec.name}: no {options.sdk_vision} sequence in {loc.path}; available vision: "
                          f"{have} (set sdk_vision)")
    out = {"feat_text": found["text"], "feat_audio": found["audio"], "feat_vision": found[options.sdk_vision],
           "labels": found["labels"]}
    if "words" in found:
        out["words"] = found["words"]
    return out


def _dim(seq: sdk_files.Sequence) -> int:
    with h5py.File(seq.path, "r") as f:
        data = f[seq.root]["data"]
        first = next(iter(data.keys()), None)
        if first is None:
            raise ConfigError(f"{seq.path}: the computational sequence holds no video")
        return int(data[first]["features"].shape[-1])


def features(spec: AffectSpec, loc: Located, seqs: dict[str, sdk_files.Sequence]) -> Features:
    """The schema of the SDK release (dims read from the files)."""
    length = ALIGNED_LEN if loc.variant == "aligned" else None
    note = ("word-aligned (frames averaged per word), left-zero-padded to 50" if length else
            "frames overlapping the segment, variable length")
    out: Features = {}
    for name in ("feat_text", "feat_audio", "feat_vision"):
        seq = seqs[name]
        out[name] = Field("float32", (length, _dim(seq)), "npy",
                          description=f"[time, dim] SDK sequence {seq.root!r} ({seq.path.name}), {note}")
    if "words" in seqs:
        out["text"] = Field("str", (), "txt", description="transcript: the segment's words ('sp' dropped)")
    if _dim(seqs["labels"]) == 1 + len(rows.EMOTIONS):
        out["meta_emotions"] = Field("float32", (6,), "npy", value_range=rows.EMOTION_RANGE,
                                     description="emotion intensities " + ", ".join(rows.EMOTIONS))
    out["label"] = Field("float32", (), "json", value_range=rows.SENTIMENT_RANGE,
                         description="sentiment of the opinion segment, -3 .. 3 (labels sequence column 0)")
    return out


def _entry(group: h5py.Group, video: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features [T, D], intervals [T, 2]) of one video; SampleError when absent or inconsistent."""
    if video not in group:
        raise SampleError(f"missing_{name}", f"{name}: video {video} is not in the sequence")
    feats, spans = group[video]["features"][()], group[video]["intervals"][()]
    if feats.ndim != 2 or spans.shape != (len(feats), 2):
        raise SampleError("shape", f"{name}: features {feats.shape} and intervals {spans.shape} disagree")
    return feats, spans.astype(np.float64)


def overlapping(spans: np.ndarray, start: float, end: float) -> np.ndarray:
    """Boolean mask [T] of the intervals overlapping [start, end] by more than :data:`EPSILON`."""
    return (np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start)) > EPSILON


def word_means(feats: np.ndarray, spans: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-word means [W, D] of the frames overlapping each word interval, and how many words got zeros."""
    out = np.zeros((len(words), feats.shape[1]), dtype=np.float32)
    empty = 0
    for j, (start, end) in enumerate(words):
        mask = overlapping(spans, start, end)
        if mask.any():
            out[j] = feats[mask].astype(np.float64).mean(axis=0)
        else:
            empty += 1
    return out, empty


def _pad(value: np.ndarray) -> tuple[np.ndarray, bool]:
    """Left-zero-pad [W, D] to [50, D], keeping the last 50 steps (SDK ``get_tensors``); and truncated?"""
    out = np.zeros((ALIGNED_LEN, value.shape[1]), dtype=np.float32)
    kept = value[-ALIGNED_LEN:]
    out[ALIGNED_LEN - len(kept):] = kept
    return out, len(value) > ALIGNED_LEN


def _aligned(name: str, entries: dict, in_segment: np.ndarray, words: np.ndarray,
             repairs: list[str]) -> np.ndarray:
    """[50, D] word-aligned steps of one field (see module docstring for the rule)."""
    feats, spans = entries[name]
    if name == "feat_text":
        value = feats[in_segment]
    else:
        value, empty = word_means(feats, spans, words)
        if empty == len(words):
            raise SampleError(f"missing_{name}", f"{name}: no frame overlaps any of the {len(words)} words")
        if empty:
            repairs.append("impute_zero")
    value, truncated = _pad(value)
    if truncated:
        repairs.append("truncated_to_50")
    return value


def _transcript(entries: dict, start: float, end: float, repairs: list[str]) -> str:
    """The words of the segment joined by spaces, SDK silence tokens ``sp`` dropped."""
    feats, spans = entries["words"]
    tokens = [rows.as_text(w) for w in feats[overlapping(spans, start, end)].reshape(-1)]
    return rows.transcript(" ".join(t for t in tokens if t != "sp"), repairs)


def _segment(key: str, entries: dict, label: np.ndarray, span: np.ndarray, variant: str,
             schema: Features) -> Sample:
    """One sample from a label row and its [start, end]; SampleError names what is wrong."""
    start, end = float(span[0]), float(span[1])
    if end - start <= EPSILON:
        raise SampleError("empty_segment", f"label interval [{start}, {end}] has no duration")
    sample: Sample = {"__key__": key, "label": rows.sentiment(label[0])}
    if "meta_emotions" in schema:
        sample["meta_emotions"] = rows.emotions(label[1:])
    in_segment = overlapping(entries["feat_text"][1], start, end)
    if not in_segment.any():
        raise SampleError("missing_feat_text", f"feat_text: no word inside [{start:.3f}, {end:.3f}]")
    repairs: list[str] = []
    for name in FIELDS:
        if variant == "aligned":
            value = _aligned(name, entries, in_segment, entries["feat_text"][1][in_segment], repairs)
        else:
            feats, spans = entries[name]
            mask = overlapping(spans, start, end)
            if not mask.any():
                raise SampleError(f"missing_{name}", f"{name}: no frame inside [{start:.3f}, {end:.3f}]")
            value = feats[mask]
        sample[name], fixed = rows.sequence(name, value, schema[name])
        repairs += fixed + rows.cast_repairs(entries[name][0].dtype)  # the aligned route averages before casting
    if "text" in schema:
        sample["text"] = _transcript(entries, start, end, repairs)
    if repairs:
        sample[REPAIRS] = tuple(sorted(set(repairs)))
    return sample


def segments(group: h5py.Group, video: str) -> int:
    """Raw items of one fold video: its label segments, or 1 for a video skipped whole (absent or inconsistent
    labels entry). Reads the video's labels entry only."""
    try:
        labels, _ = _entry(group, video, "labels")
    except SampleError:
        return 1
    return len(labels)


def _video(spec: AffectSpec, loc: Located, groups: dict[str, Any], video: str, split: str,
           schema: Features, first: int = 0, stop: int | None = None) -> Iterator[Sample | Skip]:
    """The samples (or Skips) of the labelled segments ``first .. stop - 1`` of one fold video (None: all)."""
    source = str(loc.path)
    try:
        labels, spans = _entry(groups["labels"], video, "labels")
    except SampleError as err:
        yield Skip(make_key(spec.name, split, video), source, err.reason, f"fold video {video}: {err}")
        return
    entries, problem = {}, None
    for name in [n for n in groups if n != "labels"]:
        try:
            entries[name] = _entry(groups[name], video, name)
        except SampleError as err:  # every segment of the video is skipped with this reason
            problem = problem or err
    for k in range(len(labels))[first:stop]:
        key = rows.sample_key(spec.name, split, f"{video}[{k}]", k)
        try:
            if problem is not None:
                raise problem
            yield _segment(key, entries, labels[k], spans[k], loc.variant, schema)
        except SampleError as err:
            yield Skip(key, source, err.reason, str(err))


def iter_rows(spec: AffectSpec, loc: Located, seqs: dict[str, sdk_files.Sequence], split: str,
              schema: Features, folds: dict[str, list[str]], start: int = 0,
              stop: int | None = None) -> Iterator[Sample | Skip]:
    """One Sample or Skip per label segment of the split's fold videos (fold order, then segment order): raw
    items ``start .. stop - 1`` (None: to the end). Videos before ``start`` are counted from their labels entry
    (:func:`segments`); only the part's videos have their feature entries read."""
    with ExitStack() as stack:
        groups = {name: stack.enter_context(h5py.File(seq.path, "r"))[seq.root]["data"]
                  for name, seq in seqs.items()}
        first = 0  # raw position of the video's first item
        for video in folds[split]:
            if stop is not None and first >= stop:
                return
            count = segments(groups["labels"], video) if start > 0 or stop is not None else 0
            if start == 0 and stop is None or first + count > start:
                yield from _video(spec, loc, groups, video, split, schema, max(0, start - first),
                                  None if stop is None else stop - first)
            first += count


def unfolded(seqs: dict[str, sdk_files.Sequence], folds: dict[str, list[str]]) -> int:
    """How many labelled videos are in no fold (the SDK's get_tensors drops them too; describe() says so)."""
    listed = {v for videos in folds.values() for v in videos}
    with h5py.File(seqs["labels"].path, "r") as f:
        return len(set(f[seqs["labels"].root]["data"].keys()) - listed)
