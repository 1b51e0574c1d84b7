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

from mmdata.types import Features, Sample, View

#: Optional sample entry naming the raw file a sample came from (for error messages); the writer strips it.
SOURCE = "__source__"

#: Optional sample entry listing documented repairs applied to it (reason codes); the writer counts and
#: strips it, so repairs are reported and never silent.
REPAIRS = "__repairs__"


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


class ConfigError(ValueError):
    """A configuration mistake (missing root, unknown corpus, unknown option); the message names the fix."""


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
    """

    name: str
    splits: tuple[str, ...]
    task: str
    features: Callable[..., Features]
    iter_samples: Callable[..., Iterator[Sample | Skip]]
    sources: Callable[..., list[Path]]
    describe: Callable[..., str]
    view: View | Callable[..., View | None] | None = None

    def view_for(self, root: str | Path, **options: Any) -> View | None:
        """The View of samples read from ``root`` with these reader options (``view`` itself unless callable)."""
        return self.view(root, **options) if callable(self.view) else self.view

    def options(self) -> set[str]:
        """Keyword options the reader accepts (== the keys of ``corpora.<name>.reader`` in params.yaml)."""
        params = inspect.signature(self.iter_samples).parameters
        return {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY}

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError naming unknown options and the valid ones."""
        unknown = sorted(set(options) - self.options())
        if unknown:
            raise ConfigError(
                f"unknown reader option(s) {unknown} for corpus {self.name!r}; valid: {sorted(self.options())} "
                f"(fix corpora.{self.name}.reader in params.yaml)")


def require_root(root: str | Path, corpus: str) -> Path:
    """The root as a Path, or ConfigError telling how to create or point to it."""
    path = Path(root)
    if not path.exists():
        raise ConfigError(
            f"{corpus}: root {str(path)!r} does not exist; run `mmdata synth {corpus} --out {path}` for the "
            f"synthetic mini, or set corpora.{corpus}.root in params.yaml to your download")
    return path
