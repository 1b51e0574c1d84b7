"""CMU-MultimodalSDK files: ``.csd`` computational sequences and the standard folds.

A ``.csd`` is HDF5 with one top-level group (its root name, e.g. ``COVAREP``, ``All Labels``) holding
``data/<video>/features`` [T, D], ``data/<video>/intervals`` [T, 2] (seconds) and ``metadata/<key>``
(JSON-encoded strings) [SDK:mmsdk/mmdatasdk/computational_sequence/file_ops.py]. A file's role is read from
its root name and file name, normalised to lower-case letters and digits: ``label`` -> labels, ``glove`` or
``wordvector`` -> text, ``covarep`` -> audio, ``facet42`` / ``facet41`` / ``openface`` -> vision,
``timestampedwords`` -> transcript words.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import h5py

from mmdata.errors import ConfigError

#: role -> substrings of the normalised name that select it (first role that matches wins).
ROLES = {
    "labels": ("label",),
    "text": ("glove", "wordvector"),
    "words": ("timestampedwords", "words"),
    "audio": ("covarep",),
    "facet42": ("facet42",),
    "facet41": ("facet41",),
    "openface": ("openface",),
}
FOLD_NAMES = {"train": "standard_train_fold", "valid": "standard_valid_fold", "test": "standard_test_fold"}


def normalise(name: str) -> str:
    """Lower-case letters and digits only (``Visual_Facet_42`` -> ``visualfacet42``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class Sequence:
    """One opened computational sequence: its file, root group name and metadata (JSON-decoded)."""

    path: Path
    root: str
    metadata: dict


def find(root: Path, dirs: tuple[str, ...]) -> list[Path]:
    """``.csd`` files in the root or the first of ``dirs`` under it that holds any, sorted by name."""
    for folder in (root, *(root / d for d in dirs)):
        found = sorted(folder.glob("*.csd")) if folder.is_dir() else []
        if found:
            return found
    return []


def inspect(path: Path) -> Sequence:
    """The root name and metadata of a ``.csd``; ConfigError unless it has the SDK layout."""
    try:
        with h5py.File(path, "r") as f:
            groups = list(f.keys())
            if len(groups) != 1 or not {"data", "metadata"} <= set(f[groups[0]].keys()):
                raise ConfigError(f"{path}: not an SDK computational sequence: expected one top-level group "
                                  f"with data/ and metadata/, found {groups}")
            meta = {k: _json(v[()]) for k, v in f[groups[0]]["metadata"].items()}
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable HDF5 ({exc}); re-download the .csd") from exc
    return Sequence(path, groups[0], meta)


def _json(value: object) -> object:
    """A metadata value: JSON-decoded when it is a JSON string, else as stored."""
    item = value[0] if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) and len(value) else value
    text = item.decode("utf-8") if isinstance(item, bytes) else item
    try:
        return json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return text


def role(seq: Sequence) -> str | None:
    """The role of a sequence (see module docstring), or None for sequences the reader does not use."""
    names = (normalise(seq.root), normalise(seq.path.stem))
    for name, needles in ROLES.items():
        if any(n in candidate for n in needles for candidate in names):
            return name
    return None


def by_role(paths: list[Path], title: str) -> dict[str, Sequence]:
    """role -> sequence; ConfigError when two files claim one role or a required one is missing."""
    found: dict[str, Sequence] = {}
    for path in paths:
        seq = inspect(path)
        name = role(seq)
        if name is None:
            continue
        if name in found:
            raise ConfigError(f"{title}: both {found[name].path.name} and {path.name} look like the {name} "
                              f"sequence; keep one of them in the folder")
        found[name] = seq
    missing = [r for r in ("labels", "text", "audio") if r not in found]
    if missing:
        raise ConfigError(f"{title}: SDK folder {paths[0].parent} lacks the {', '.join(missing)} computational "
                          f"sequence(s); found {[p.name for p in paths]}")
    return found


def find_folds(folder: Path, option: str | None) -> Path | None:
    """The folds file: the ``folds`` option, else ``*std_folds.py`` or ``folds.json`` next to the .csd files."""
    if option is not None:
        return Path(option)
    candidates = sorted(folder.glob("*std_folds.py")) + sorted(folder.glob("folds.json"))
    return candidates[0] if candidates else None


def read_folds(path: Path, title: str) -> dict[str, list[str]]:
    """split -> video ids from the SDK's ``*_std_folds.py`` (parsed, never executed) or a JSON file.

    Raises:
        ConfigError: a split list is missing or a video is in two splits.
    """
    if path.suffix == ".py":
        lists = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                lists[node.targets[0].id] = node.value
        folds = {s: ast.literal_eval(lists[v]) for s, v in FOLD_NAMES.items() if v in lists}
    else:
        raw = json.loads(path.read_text(encoding="utf-8"))
        folds = {s: raw.get(s, raw.get(v)) for s, v in FOLD_NAMES.items() if s in raw or v in raw}
    missing = sorted(set(FOLD_NAMES) - set(folds))
    if missing:
        raise ConfigError(f"{title}: folds file {path} lacks {missing} (expected {sorted(FOLD_NAMES.values())} "
                          f"or JSON keys train/valid/test)")
    seen: dict[str, str] = {}
    for split, videos in folds.items():
        for video in videos:
            if video in seen:
                raise ConfigError(f"{title}: folds file {path}: video {video} is in {seen[video]} and {split}")
            seen[video] = split
    return {s: [str(v) for v in folds[s]] for s in FOLD_NAMES}
