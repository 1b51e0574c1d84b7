"""The CMU-MultimodalSDK release of a MOSI/MOSEI mini: ``.csd`` HDF5 files and the standard-folds module.

Each ``.csd`` holds one top-level group (the sequence's root name) with ``data/<video>/features`` [T, D] and
``data/<video>/intervals`` [T, 2] over the whole video (gap frames between segments included) and
``metadata/<key>`` JSON strings, as the SDK's ``file_ops.write_CSD`` lays them out.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from mmdata.synth.affect.spec import METADATA_KEYS, SPLITS, SynthSpec


def _write_csd(path: Path, root: str, videos: dict[str, tuple[np.ndarray, np.ndarray]], spec: SynthSpec,
               description: str, dims: list[str]) -> None:
    """One computational sequence: video -> (features [T, D], intervals [T, 2])."""
    values = {"root name": root, "computational sequence description": description, "dimension names": dims,
              "computational sequence version": "1.0", "alignment compatible": True, "dataset name": spec.title,
              "dataset version": "1.0", "creator": "mmdata synthetic mini", "contact": "n/a",
              "featureset bib citation": "n/a", "dataset bib citation": "n/a"}
    with h5py.File(path, "w", track_order=True) as f:  # track_times off below: same data, same bytes
        group = f.create_group(root)
        data = group.create_group("data")
        for video, (features, intervals) in videos.items():
            entry = data.create_group(video)
            entry.create_dataset("features", data=features, track_times=False)
            entry.create_dataset("intervals", data=intervals, track_times=False)
        meta = group.create_group("metadata")
        for key in METADATA_KEYS:
            meta.create_dataset(key, data=[json.dumps(values[key])], dtype=h5py.string_dtype(), track_times=False)


def _per_video(data: list[dict], parts: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video -> (features, intervals) concatenated in time order from (frames key, timing key) parts per clip."""
    videos: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for split in data:
        for (video, _), frames, timing in zip(split["clips"], split["frames"], split["timing"]):
            for frames_key, timing_key in parts:
                videos.setdefault(video, []).append((frames[frames_key], timing[timing_key]))
    return {v: (np.concatenate([f for f, _ in chunks]), np.concatenate([t for _, t in chunks]))
            for v, chunks in videos.items()}


def _labels(spec: SynthSpec, data: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video -> (label rows [S, 1 or 7], segment intervals [S, 2]), one row per clip in clip order."""
    videos: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for split in data:
        for i, (video, _) in enumerate(split["clips"]):
            row = [split["labels"][i]] + (list(split["emotions"][i]) if spec.emotions else [])
            videos.setdefault(video, []).append((np.array(row, dtype=np.float32), split["timing"][i]["segment"]))
    return {v: (np.stack([r for r, _ in rows]), np.stack([s for _, s in rows])) for v, rows in videos.items()}


def _words(data: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video -> (words [W, 1] bytes, intervals [W, 2]) from the transcripts."""
    videos: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for split in data:
        for (video, _), text, timing in zip(split["clips"], split["raw_text"], split["timing"]):
            tokens = np.array([w.encode() for w in text.split()], dtype="S")[:, None]
            videos.setdefault(video, []).append((tokens, timing["words"]))
    return {v: (np.concatenate([w for w, _ in c]), np.concatenate([t for _, t in c])) for v, c in videos.items()}


def write(out: Path, spec: SynthSpec, data: dict[str, dict]) -> Path:
    """Write the .csd files and ``<prefix>_std_folds.py`` under ``out / spec.sdk_dir``; returns that folder."""
    folder = out / spec.sdk_dir
    folder.mkdir(parents=True, exist_ok=True)
    splits = [data[s] for s in SPLITS]
    prefix = spec.sdk_prefix
    _write_csd(folder / f"{prefix}_TimestampedWords.csd", "words", _words(splits), spec, "words", ["word"])
    _write_csd(folder / f"{prefix}_TimestampedWordVectors.csd", "glove_vectors",
               _per_video(splits, [("glove", "words")]), spec, "GloVe 840B word vectors", ["glove"] * 300)
    _write_csd(folder / f"{prefix}_COVAREP.csd", "COVAREP",
               _per_video(splits, [("gap_covarep", "gap_audio"), ("covarep", "audio")]), spec, "COVAREP", ["c"] * 74)
    for name, (dim, suffix, root) in spec.vision.items():
        _write_csd(folder / f"{prefix}_{suffix}.csd", root,
                   _per_video(splits, [(f"gap_{name}", "gap_vision"), (name, "vision")]), spec, root, ["f"] * dim)
    suffix, root = spec.labels
    _write_csd(folder / f"{prefix}_{suffix}.csd", root, _labels(spec, splits), spec, "opinion segment labels",
               ["sentiment"] + (["happy", "sad", "anger", "surprise", "disgust", "fear"] if spec.emotions else []))
    folds = {s: list(dict.fromkeys(v for v, _ in data[s]["clips"])) for s in SPLITS}
    lines = [f"standard_{s}_fold = {folds[s]!r}" for s in SPLITS]
    (folder / spec.folds_file).write_text("# SDK standard folds (video ids)\n" + "\n".join(lines) + "\n")
    return folder
