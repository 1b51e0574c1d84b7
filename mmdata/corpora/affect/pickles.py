"""The pickle releases (MMSA, MulT, MultiBench raw): recognition, schema and rows.

All three hold ``{'train'|'valid'|'test': {array name: [N, ...]}}``. The family is read from the content, not
the file name: MMSA has ``regression_labels``; MulT has ``labels`` [N, 1, 1] and ids [N, 3] of byte strings
``(video, clip, ...)``; MultiBench raw has ``labels`` and 1-d ids ``"video[k]"``.
"""
from __future__ import annotations

import functools
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.modalities import safe_pickle
from mmdata.corpora.affect import rows
from mmdata.corpora.affect.spec import SPLITS, TEXT_SOURCES, AffectSpec, Located
from mmdata.corpora.base import REPAIRS, Skip
from mmdata.errors import BadInputError, ConfigError, SampleError, UnsafeInputError
from mmdata.types import Features, Field, Sample

#: Pickle key per feature field.
ARRAYS = {"feat_text": "text", "feat_audio": "audio", "feat_vision": "vision"}
_SDK_STYLE_ID = re.compile(r"\[\d+\]$")


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int, size: int) -> Any:
    # A plain pickle.load would run any callable the file names; the releases hold only numpy arrays and
    # plain values, so the restricted unpickler refuses everything else before it runs.
    return safe_pickle.load(path)


def load(path: Path, spec: AffectSpec) -> dict:
    """The unpickled release (cached per path, mtime and size; callers never mutate it).

    Raises:
        ConfigError: the file is not a pickle of split dicts (names what was found).
        UnsafeInputError: the pickle refers to a type no data release holds (it could run code); refused unread.
    """
    stat = path.stat()
    try:
        data = _load_cached(str(path), stat.st_mtime_ns, stat.st_size)
    except UnsafeInputError:
        raise  # a ValueError too, but not a damaged download: re-downloading would not help
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        # MMSA#98: partial Baidu downloads fail with "invalid load key '\x00'".
        raise ConfigError(f"{spec.name}: {path} is not a readable pickle ({exc}); re-download it") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict) for s in SPLITS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{spec.name}: {path} is not a {spec.title} release pickle: expected split dicts "
                          f"{list(SPLITS)}, found {found}")
    return data


def family(data: dict, path: Path, spec: AffectSpec) -> tuple[str, str]:
    """(family, evidence in words) from the train split's arrays."""
    train = data["train"]
    if "regression_labels" in train:
        return "mmsa", "has 'regression_labels'"
    if "labels" not in train:
        raise ConfigError(f"{spec.name}: {path} has neither MMSA 'regression_labels' nor MulT/MultiBench "
                          f"'labels' (train keys: {sorted(train)})")
    ids = np.asarray(train.get("id", []))
    if ids.ndim == 2:
        return "mult", "'labels' with ids [N, 3] (video, clip, ...)"
    if ids.size and _SDK_STYLE_ID.search(rows.as_text(ids.reshape(-1)[0])):
        return "multibench", "'labels' with ids 'video[k]'"
    if path.stem.endswith("_raw"):
        return "multibench", "'labels' and the file name *_raw.pkl"
    return "mult", "'labels' (ids not recognised; MulT assumed)"


def variant(data: dict, fam: str) -> str:
    """'aligned' or 'unaligned' (MMSA unaligned carries lengths; the others show it in their shapes)."""
    split = data["train"]
    if fam == "mmsa":
        return "unaligned" if "audio_lengths" in split else "aligned"
    lengths = {np.shape(split[k])[1:2] for k in ("audio", "vision") if k in split}
    return "aligned" if lengths == {(50,)} else "unaligned"


def has_emotions(data: dict, fam: str) -> bool:
    """True when the label rows hold [sentiment, 6 emotions] (seen in MultiBench's loader; MOSEI only)."""
    if fam == "mmsa":
        return False
    labels = np.asarray(data["train"]["labels"])
    return labels.ndim >= 2 and int(np.prod(labels.shape[1:])) == 1 + len(rows.EMOTIONS)


def features(spec: AffectSpec, loc: Located, data: dict) -> Features:
    """The schema of a pickle release (sequence lengths as stored in the file)."""
    train, dims = data["train"], spec.dims[loc.family]
    text_len = int(np.shape(train["text"])[1])
    out: Features = {"feat_text": Field("float32", (text_len, dims["text"]), "npy",
                                        description=f"[token, dim] {TEXT_SOURCES[loc.family]}, as released")}
    for name in ("audio", "vision"):
        if loc.variant == "aligned":
            length, note = int(np.shape(train[name])[1]), "word-aligned, left-zero-padded as released"
        elif loc.family == "mmsa":
            length, note = None, f"unaligned, trimmed to {name}_lengths"
        else:
            length, note = int(np.shape(train[name])[1]), "unaligned, zero-padded as released (no lengths)"
        kind = (spec.audio_kind if name == "audio" else spec.vision_kind)[loc.family]
        out[f"feat_{name}"] = Field("float32", (length, dims[name]), "npy", description=f"[time, dim] {kind}, {note}")
    if loc.family == "mmsa":
        out["text"] = Field("str", (), "txt", description="raw transcript of the clip (MMSA raw_text)")
    if has_emotions(data, loc.family):
        out["meta_emotions"] = Field("float32", (6,), "npy", value_range=rows.EMOTION_RANGE,
                                     description="emotion intensities " + ", ".join(rows.EMOTIONS))
    out["label"] = Field("float32", (), "json", value_range=rows.SENTIMENT_RANGE,
                         description="sentiment, mean of annotators, -3 (negative) .. 3 (positive)")
    return out


def _table(data: dict, split: str, path: Path, fam: str, name: str) -> dict[str, Any]:
    """The split's arrays, after checking they all have the same number of rows."""
    table = data[split]
    names = ["id", "text", "audio", "vision"]
    names += ["regression_labels", "raw_text"] if fam == "mmsa" else ["labels"]
    names += [n for n in ("audio_lengths", "vision_lengths") if n in table]
    missing = [n for n in names if n not in table]
    if missing:
        raise BadInputError(f"{name}: {path} split {split!r} lacks arrays {missing}")
    counts = {n: len(table[n]) for n in names}
    if len(set(counts.values())) != 1:
        raise BadInputError(f"{name}: {path} split {split!r} has arrays of different lengths: {counts}")
    return table


def _row(table: dict, i: int, key: str, fam: str, spec: Features) -> Sample:
    """One canonical sample from row ``i``; SampleError names what is wrong."""
    sample: Sample = {"__key__": key}
    if fam == "mmsa":
        label, emotions = table["regression_labels"][i], None
    else:
        values = np.ravel(table["labels"][i])
        label, emotions = values[0], (values[1:] if "meta_emotions" in spec else None)
    sample["label"] = rows.sentiment(label)
    repairs: list[str] = []
    for name, src in ARRAYS.items():
        lengths = table.get(f"{src}_lengths")
        length = int(lengths[i]) if lengths is not None and spec[name].shape[0] is None else None
        sample[name], fixed = rows.sequence(name, table[src][i], spec[name], length)
        repairs += fixed
    if fam == "mmsa":
        sample["text"] = rows.transcript(table["raw_text"][i], repairs)
    if emotions is not None:
        sample["meta_emotions"] = rows.emotions(emotions)
    if repairs:  # once per sample and code: the count is of samples repaired
        sample[REPAIRS] = tuple(sorted(set(repairs)))
    return sample


def iter_rows(spec: AffectSpec, loc: Located, data: dict, split: str, schema: Features, start: int = 0,
              stop: int | None = None) -> Iterator[Sample | Skip]:
    """One Sample or Skip per row of ``split``, in file order: rows ``start .. stop - 1`` (None: to the end)."""
    table = _table(data, split, loc.path, loc.family, spec.name)
    for i in range(len(table["id"]))[start:stop]:
        key = rows.sample_key(spec.name, split, table["id"][i], i)
        try:
            yield _row(table, i, key, loc.family, schema)
        except SampleError as err:
            yield Skip(key, str(loc.path), err.reason, str(err))
