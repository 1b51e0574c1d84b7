"""Shared helpers for the readers' ``count_raw``: enumerating raw items without decoding media.

``count_raw(root, split, **options) -> RawCount`` is the second, independent view of a split's raw items that
``mmdata verify --source`` (and the writer) reconcile with ``raw = written + skipped``. It lists files and reads
split lists, labels and array headers only, so it runs in seconds where reading the samples takes minutes.
(A package, like ``affect``: the top-level modules of :mod:`mmdata.corpora` are corpora.)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mmdata.corpora.base import IGNORED_NAMES, RawCount
from mmdata.errors import ConfigError


def count_ignored(folders: Iterable[str | Path]) -> int:
    """How many files named in :data:`~mmdata.corpora.base.IGNORED_NAMES` lie directly in ``folders``.

    Missing folders count 0 (the reader reports them); a folder listed twice is counted once.

    Args:
        folders: the folders a split's files are read from.
    """
    total = 0
    for folder in sorted({Path(f) for f in folders}):
        if folder.is_dir():
            total += sum(1 for name in IGNORED_NAMES if (folder / name).is_file())
    return total


def raw_count(raw: int, unit: str, folders: Iterable[str | Path], *, rows: bool = False, parted: bool = True
              ) -> RawCount:
    """A :class:`~mmdata.corpora.base.RawCount` with the ignored files of ``folders`` counted.

    Args:
        raw: raw items of the split; unit: what one is, in the release's words.
        folders: the folders the split is read from (see :func:`count_ignored`).
        rows: ``raw`` counts index rows; parted: parts can be read alone (see :class:`~mmdata.corpora.base.RawCount`).
    """
    return RawCount(raw=int(raw), unit=unit, ignored=count_ignored(folders), rows=rows, parted=parted)


def check_split(corpus: str, split: str, splits: Sequence[str]) -> str:
    """``split`` itself, or ConfigError naming the valid splits (as the readers raise)."""
    if split not in splits:
        raise ConfigError(f"{corpus}: unknown split {split!r}; valid: {', '.join(splits)}")
    return split
