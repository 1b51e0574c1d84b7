"""The corpus reader contract shared by every module in :mod:`mmdata.corpora`.

A reader turns a raw corpus on disk into canonical samples. It yields, in a deterministic order, either a
:data:`~mmdata.types.Sample` (a dict with ``__key__`` and one entry per declared field) or a :class:`Skip`
naming the file, the key and what was wrong. Every raw item yields exactly one of the two, which is what
lets the writer reconcile ``raw = written + skipped``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.errors import ConfigError, FileError, check_names
from mmdata.types import Features, Sample, View

#: Optional sample entry naming the raw file a sample came from (for error messages); the writer strips it.
SOURCE = "__source__"

#: Optional sample entry listing documented repairs applied to it (reason codes); the writer counts and
#: strips it, so repairs are reported and never silent.
REPAIRS = "__repairs__"

#: File names an operating system or file browser drops into folders (macOS Finder, Windows Explorer). They
#: are never raw items nor skips: readers pass over them and ``count_raw`` reports them as ``ignored``.
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class Skip:
    """A raw item that was not turned into a sample.

    Attributes:
        key: the sample key it would have had (or the best identifier available).
        source: the file it came from.
        reason: a short reason code (``non_finite``, ``shape``, ``label_range``, ``duplicate_key`` ...).
        detail: a human sentence with the specifics (which field, expected vs got).
    """

    key: str
    source: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, str]:
        """JSON-ready dict for the manifest's skip report."""
        return {"key": self.key, "source": self.source, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class RawCount:
    """The raw items of one split as a corpus's ``count_raw`` enumerates them, without decoding any media.

    Attributes:
        raw: raw items, in the unit the ledger counts: each one becomes one Sample or one Skip of
            ``iter_samples`` (or, when ``rows`` is set, one index row).
        unit: what one raw item is, in the release's words ("clip", "split.json id", "window" ...).
        ignored: files named in :data:`IGNORED_NAMES` in the folders the split is read from, plus files a reader
            passes over by its configuration (stock CSVs of tickers outside ``groups``); outside the ledger
            (neither raw nor skipped); a folder shared by several splits counts in each.
        rows: True when ``raw`` counts index rows (a View corpus storing one sample per split, e.g. the
            stock windows), so it reconciles with the manifest's ``rows`` instead of the report's ``raw``.
        parted: whether a part of the items can be read without holding the whole source (False: a pickle,
            which every part would load whole; the Ray engine then reads it once, in the driver).
    """

    raw: int
    unit: str
    ignored: int = 0
    rows: bool = False
    parted: bool = True


@dataclass(frozen=True)
class Corpus:
    """One registered corpus.

    Attributes:
        name: registry key == module name == params key == CLI argument == output folder.
        splits: split names in canonical order.
        task: "classification" or "regression" (decides metrics and losses).
        features: ``features(root, **options) -> Features`` (may depend on the release found under root).
        iter_samples: ``iter_samples(root, split, **options) -> Iterator[Sample | Skip]``, deterministic order.
        sources: ``sources(root, **options) -> list[Path]``: the raw files read, for the source fingerprint.
        describe: ``describe(root, **options) -> str``: which release/layout was found, in words.
        view: how a stored sample expands into training samples at read time (samples then carry
            ``__rows__``), or None for one training sample per stored sample; or ``view(root, **options)
            -> View | None`` when the view depends on reader options (a window length); see :meth:`view_for`.
        count_raw: ``count_raw(root, split, **options) -> RawCount``: the split's raw items enumerated without
            decoding media (``mmdata verify --source`` reconciles them with the shards), or None.
        iter_part: ``iter_part(root, split, start, stop, **options) -> Iterator[Sample | Skip]``: raw items
            ``start .. stop - 1`` of ``iter_samples`` (the same Samples and Skips, in the same order), reading
            and decoding only those; or None. With ``count_raw`` (which enumerates the items) it lets each task of
            a distributed writer read its own part of the source (``mmdata shard --engine ray``); without it the
            writer's driver reads the source and ships the items (:mod:`mmdata.shards.ray_engine`).
    """

    name: str
    splits: tuple[str, ...]
    task: str
    features: Callable[..., Features]
    iter_samples: Callable[..., Iterator[Sample | Skip]]
    sources: Callable[..., list[Path]]
    describe: Callable[..., str]
    view: View | Callable[..., View | None] | None = None
    count_raw: Callable[..., RawCount] | None = None
    iter_part: Callable[..., Iterator[Sample | Skip]] | None = None

    def view_for(self, root: str | Path, **options: Any) -> View | None:
        """The View of samples read from ``root`` with these reader options (``view`` itself unless callable)."""
        return self.view(root, **options) if callable(self.view) else self.view

    def options(self) -> set[str]:
        """Keyword options the reader accepts (== the keys of ``corpora.<name>.reader`` in params.yaml)."""
        params = inspect.signature(self.iter_samples).parameters
        return {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY}

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError naming unknown options (a renamed one with its new name) and the valid ones."""
        check_names(options, self.options(), "reader option(s)", f"for corpus {self.name!r}",
                    f" (fix corpora.{self.name}.reader in params.yaml, or mmdata shard's --option)")


def require_root(root: str | Path, corpus: str) -> Path:
    """The root as a Path, or ConfigError telling how to create or point to it."""
    path = Path(root)
    if not path.exists():
        raise ConfigError(
            f"{corpus}: root {str(path)!r} does not exist; run `mmdata synth {corpus} --out {path}` for the "
            f"synthetic mini, or set corpora.{corpus}.root in params.yaml to your download")
    return path


def _climbs_out(part: str) -> bool:
    """True when a relative path read from data is absolute or has a ``..`` component.

    Both slashes count and a drive letter counts: releases are often packed on Windows, and refusing a name
    that is only odd on POSIX costs nothing.
    """
    absolute = part.startswith(("/", "\\")) or part[1:2] == ":"
    return absolute or ".." in part.replace("\\", "/").split("/")


def inside_root(root: str | Path, *parts: str) -> Path:
    """``root / parts`` for a file named by a data file (a JSONL ``img``, a split-list entry), kept inside root.

    Every part is refused when it is absolute or has a ``..`` component, and the joined path, after following
    symlinks, must resolve inside ``root`` (itself resolved first, so a symlinked root is fine, while a symlink
    in the release pointing out of it is not). Layout names the reader adds (``"img"``) may be parts too.

    Args:
        root: the corpus root the reader was given, or the release folder it found under it.
        parts: path parts, at least one of them read out of a data file.

    Returns:
        The joined path, unresolved, so reports name files as the release lays them out.

    Raises:
        FileError: ``outside_root`` for the cases above (the reader turns it into a Skip, so it is counted);
            ``bad_path`` for a part that is not a usable file name (not a string, a NUL byte, a symlink loop).
    """
    base = Path(root)
    if not all(isinstance(part, str) and "\0" not in part for part in parts):
        raise FileError("bad_path", f"file name {parts!r} read from the data is not a usable path", base)
    path = base.joinpath(*parts)
    if any(_climbs_out(part) for part in parts):
        raise FileError("outside_root", f"{'/'.join(parts)!r} read from the data is absolute or climbs out "
                        f"with '..'; files must lie inside {base}", path)
    try:
        inside = path.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise FileError("bad_path", f"{path} cannot be resolved ({exc})", path) from None
    if not inside:
        raise FileError("outside_root", f"{path} is or lies under a symlink leading outside {base}", path)
    return path
