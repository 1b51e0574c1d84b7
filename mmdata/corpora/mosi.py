"""CMU-MOSI sentiment (regression in [-3, 3]) from the MMSA or MulT preprocessed pickle releases.

Both families hold the same clips with 5-dim COVAREP audio and 20-dim FACET vision; MMSA adds BERT text
features [50, 768] and the raw transcript, MulT has GloVe text [50, 300] and no transcript. A clip gets the
key ``mosi/<split>/<video>_<clip>`` in both, so shards built from either release line up.
"""
from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.corpora.base import REPAIRS, ConfigError, Corpus, Skip, require_root
from mmdata.corpora.check import SampleError
from mmdata.types import Features, Field, Sample, make_key

NAME = "mosi"
SPLITS = ("train", "valid", "test")
#: Clips per split in the MMSA/MulT releases (the SDK route gives slightly different counts).
SPLIT_SIZES = {"train": 1284, "valid": 229, "test": 686}
#: MMSA: ``<root>/MOSI/Processed/{aligned_50,unaligned_50}.pkl`` (thuiar/MMSA config_regression.json).
MMSA_FILES = {"aligned": "aligned_50.pkl", "unaligned": "unaligned_50.pkl"}
MMSA_DIRS = ("MOSI/Processed", "Processed", ".")
MMSA_URL = "https://github.com/thuiar/MMSA (Google Drive / BaiduYun links in README)"
#: MulT (yaohungt/Multimodal-Transformer); MultiBench's affect loader reads the same files.
MULT_FILES = {"aligned": "mosi_data.pkl", "unaligned": "mosi_data_noalign.pkl"}
MULT_URL = "https://github.com/yaohungt/Multimodal-Transformer (README data link)"
MULTIBENCH_FILES = ("mosi_data.pkl", "mosi_raw.pkl")  # mosi_raw.pkl has 35/74-dim features: not read here
MULTIBENCH_URL = "https://github.com/pliang279/MultiBench (README, Affective Computing)"
RELEASES = ("auto", "mmsa", "mult")
VARIANTS = ("aligned", "unaligned")
ALIGNED_LEN = 50
UNALIGNED_LEN = {"audio": 375, "vision": 500}
DIMS = {"audio": 5, "vision": 20}
TEXT_DIMS = {"mmsa": 768, "mult": 300}
#: Pickle key per modality; ``text`` is BERT in MMSA and GloVe in MulT.
_ARRAYS = {"feat_text": "text", "feat_audio": "audio", "feat_vision": "vision"}


def _check_options(release: str, variant: str) -> None:
    """ConfigError naming the valid values unless both options are known."""
    if release not in RELEASES:
        raise ConfigError(f"{NAME}: unknown release {release!r}; valid: {', '.join(RELEASES)}")
    if variant not in VARIANTS:
        raise ConfigError(f"{NAME}: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")


def _candidates(root: Path, release: str, variant: str) -> list[Path]:
    """Files to look for under a directory root, in preference order (MMSA before MulT)."""
    paths = []
    if release in ("auto", "mmsa"):
        paths += [root / d / MMSA_FILES[variant] for d in MMSA_DIRS]
    if release in ("auto", "mult"):
        paths.append(root / MULT_FILES[variant])
    return paths


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int, size: int) -> dict:
    # pickle.load can run arbitrary code: only load files the user brought. It is the releases' format.
    with open(path, "rb") as f:
        return pickle.load(f)


def _load(path: Path) -> dict:
    """The unpickled release (cached per path, modification time and size; callers never mutate it)."""
    stat = path.stat()
    data = _load_cached(str(path), stat.st_mtime_ns, stat.st_size)
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict) for s in SPLITS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{NAME}: {path} is not a MOSI release pickle: expected split dicts "
                          f"{list(SPLITS)}, found {found}")
    return data


def _family(data: dict, path: Path) -> str:
    """'mmsa' or 'mult' from the keys of the train split."""
    keys = data["train"]
    if "regression_labels" in keys:
        return "mmsa"
    if "labels" in keys and np.ndim(keys["labels"]) == 3:
        return "mult"
    raise ConfigError(f"{NAME}: {path} has neither MMSA 'regression_labels' nor MulT 'labels' [N, 1, 1] "
                      f"(train keys: {sorted(keys)})")


def _file_variant(data: dict, family: str) -> str:
    """'aligned' or 'unaligned' from the arrays (MMSA unaligned carries lengths; MulT shows it in shapes)."""
    split = data["train"]
    if family == "mmsa":
        return "unaligned" if "audio_lengths" in split else "aligned"
    lengths = {np.shape(split[k])[1:2] for k in ("audio", "vision")}
    return "aligned" if lengths == {(ALIGNED_LEN,)} else "unaligned"


def _locate(root: str | Path, release: str, variant: str) -> tuple[Path, str, dict]:
    """(pickle path, family, data) for the options; ConfigError when none fits, naming what was tried."""
    _check_options(release, variant)
    root = require_root(root, NAME)
    if root.is_dir():
        tried = _candidates(root, release, variant)
        found = [p for p in tried if p.is_file()]
        if not found:
            raise ConfigError(f"{NAME}: no {variant} {release} release under {root}; looked for "
                              f"{', '.join(str(p) for p in tried)}")
        root = found[0]
    data = _load(root)
    family = _family(data, root)
    if release != "auto" and release != family:
        raise ConfigError(f"{NAME}: {root} holds the {family} release, not {release}; set release: {family}")
    held = _file_variant(data, family)
    if held != variant:
        raise ConfigError(f"{NAME}: {root} holds {held} sequences; set variant: {held}")
    return root, family, data


def _features_for(family: str, variant: str) -> Features:
    """The schema of one release family and variant."""
    text_src = "BERT token features (MMSA)" if family == "mmsa" else "GloVe word vectors (MulT)"
    features: Features = {
        "feat_text": Field("float32", (ALIGNED_LEN, TEXT_DIMS[family]), "npy",
                           description=f"[token, dim] {text_src}, 50 steps as released"),
    }
    for name, dim in DIMS.items():
        if variant == "aligned":
            length, note = ALIGNED_LEN, "word-aligned, 50 steps zero-padded as released"
        elif family == "mmsa":
            length, note = None, f"unaligned, trimmed to {name}_lengths"
        else:
            length, note = UNALIGNED_LEN[name], "unaligned, zero-padded as released (no lengths given)"
        kind = "COVAREP subset" if name == "audio" else "FACET 4.1 subset"
        features[f"feat_{name}"] = Field("float32", (length, dim), "npy",
                                         description=f"[time, dim] {kind}, {note}")
    if family == "mmsa":
        features["text"] = Field("str", (), "txt", description="raw transcript of the clip (MMSA raw_text)")
    features["label"] = Field("float32", (), "json", value_range=(-3.0, 3.0),
                              description="sentiment, mean of annotators, -3 (negative) .. 3 (positive)")
    return features


def features(root: str | Path, *, release: str = "auto", variant: str = "aligned") -> Features:
    """The field schema of the release found under ``root`` (text dims and sequence lengths depend on it)."""
    _, family, _ = _locate(root, release, variant)
    return _features_for(family, variant)


def sources(root: str | Path, *, release: str = "auto", variant: str = "aligned") -> list[Path]:
    """The one pickle file read."""
    return [_locate(root, release, variant)[0]]


def describe(root: str | Path, *, release: str = "auto", variant: str = "aligned") -> str:
    """Which file, release family and variant were found, in words."""
    path, family, _ = _locate(root, release, variant)
    name = {"mmsa": "MMSA (thuiar/MMSA)", "mult": "MulT/MultiBench (yaohungt/Multimodal-Transformer)"}[family]
    return f"CMU-MOSI, {name} release, {variant} sequences, file {path}"


def _split_table(data: dict, split: str, path: Path, family: str) -> dict[str, Any]:
    """The split's arrays, after checking they all have the same number of rows."""
    if split not in SPLITS:
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    # The releases call the middle split 'valid', as we do.
    table = data[split]
    names = ["id", "text", "audio", "vision"]
    names += ["regression_labels", "raw_text"] if family == "mmsa" else ["labels"]
    names += [n for n in ("audio_lengths", "vision_lengths") if n in table]
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"{NAME}: {path} split {split!r} lacks arrays {missing}")
    counts = {n: len(table[n]) for n in names}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{NAME}: {path} split {split!r} has arrays of different lengths: {counts}")
    return table


def _source_id(raw: Any, family: str) -> str:
    """``<video>_<clip>`` from an MMSA id ``"video$_$clip"`` or a MulT id row ``(b'video', b'clip', ...)``."""
    def text(x: Any) -> str:
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)

    if family == "mmsa":
        return "_".join(text(raw).split("$_$"))
    return f"{text(raw[0])}_{text(raw[1])}"


def _label(table: dict, i: int, family: str) -> np.ndarray:
    """The sentiment of row ``i`` as a 0-d float32 array; SampleError unless finite and in [-3, 3]."""
    raw = table["regression_labels"][i] if family == "mmsa" else np.ravel(table["labels"][i])[0]
    label = np.asarray(raw, dtype=np.float32)
    if not np.isfinite(label) or abs(float(label)) > 3.0:
        raise SampleError("label_range", f"field label: {float(label)} is not a finite value in [-3, 3]")
    return label


def _sequence(table: dict, i: int, name: str, spec: Field) -> tuple[np.ndarray, bool]:
    """Row ``i`` of a feature array as a float32 copy [time, dim] and whether ``-inf`` was set to 0.

    Raises:
        SampleError: wrong shape, a stored length of 0 or past the padding, NaN or +inf values.
    """
    src = _ARRAYS[name]
    value = np.asarray(table[src][i])
    want_len, want_dim = spec.shape
    if value.ndim != 2 or value.shape[1] != want_dim or want_len not in (None, value.shape[0]):
        raise SampleError("shape", f"field {name}: expected shape {spec.shape}, got {value.shape}")
    if want_len is None:
        length = int(table[f"{src}_lengths"][i])
        if not 0 < length <= value.shape[0]:
            raise SampleError("length", f"field {name}: {src}_lengths = {length}, padded length "
                                        f"{value.shape[0]}")
        value = value[:length]
    value = np.array(value, dtype=np.float32)  # a copy: the cached release stays untouched
    bad, neg_inf = np.isnan(value) | np.isposinf(value), np.isneginf(value)
    if name == "feat_text":
        bad |= neg_inf  # the -inf repair is documented for audio/vision only
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise SampleError("non_finite", f"field {name}: {rows} of {len(value)} rows hold NaN or inf")
    # The releases' loaders (MMSA, MulT, MultiBench) all set audio -inf (log of 0) to 0; we do the same.
    value[neg_inf] = 0.0
    return value, bool(neg_inf.any())


def _raw_text(table: dict, i: int) -> str:
    """The MMSA transcript of row ``i``; SampleError when empty."""
    raw = table["raw_text"][i]
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw if isinstance(raw, str) else ""
    if not text.strip():
        raise SampleError("empty_text", f"field text: empty raw_text ({raw!r})")
    return str(text)


def _row(table: dict, i: int, key: str, family: str, spec: Features) -> Sample:
    """One canonical sample from row ``i``; SampleError names what is wrong."""
    label = _label(table, i, family)
    sample: Sample = {"__key__": key}
    repaired = False
    for name in _ARRAYS:
        sample[name], fixed = _sequence(table, i, name, spec[name])
        repaired |= fixed
    if family == "mmsa":
        sample["text"] = _raw_text(table, i)
    sample["label"] = label
    if repaired:
        sample[REPAIRS] = ("neg_inf_to_zero",)
    return sample


def _key(split: str, raw_id: Any, family: str, i: int) -> str:
    """The sample key of a row; a row whose id has no usable character is keyed by its index."""
    try:
        return make_key(NAME, split, _source_id(raw_id, family))
    except (ValueError, IndexError, TypeError):
        return make_key(NAME, split, f"row{i}")


def iter_samples(root: str | Path, split: str, *, release: str = "auto",
                 variant: str = "aligned") -> Iterator[Sample | Skip]:
    """Samples of one split in file order, one Sample or Skip per pickle row.

    Args:
        root: a directory holding a release (``MOSI/Processed/aligned_50.pkl``, ``mosi_data.pkl`` ...) or
            one pickle file.
        split: "train", "valid" or "test".
        release: "auto" (MMSA preferred when both are present), "mmsa" or "mult".
        variant: "aligned" (50 word-aligned steps) or "unaligned" (frame-rate sequences).

    Yields:
        Samples with feat_text [50, 768 | 300], feat_audio [time, 5], feat_vision [time, 20], text (MMSA
        only) and label, or Skips naming the pickle, the key and the problem.

    Raises:
        ConfigError: bad option, missing root or no matching release file.
        ValueError: arrays of one split disagree on the number of rows.
    """
    path, family, data = _locate(root, release, variant)
    spec = _features_for(family, variant)
    table = _split_table(data, split, path, family)
    for i in range(len(table["id"])):
        key = _key(split, table["id"][i], family, i)
        try:
            yield _row(table, i, key, family, spec)
        except SampleError as err:
            yield Skip(key, str(path), err.reason, str(err))


CORPUS = Corpus(name=NAME, splits=SPLITS, task="regression", features=features, iter_samples=iter_samples,
                sources=sources, describe=describe)
