"""The reader entry points MOSI and MOSEI share: one set of keyword options, bound to each corpus's spec.

Each corpus module exposes these bound methods under the contract's names (``features``, ``iter_samples`` ...).
A bound method's signature leaves out ``self``, so the registry and the convention tests read the same
keyword-only options from either corpus, and the options are written once.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmdata.corpora.affect import count, reader
from mmdata.corpora.affect.spec import AffectSpec, Options
from mmdata.corpora.base import Corpus, RawCount, Skip
from mmdata.types import Features, Sample


class AffectReader:
    """The five reader entry points of one affect corpus (CMU-MOSI or CMU-MOSEI).

    Options of every entry point:
        release: "auto" (MMSA, then MulT, MultiBench, SDK), "mmsa", "mult", "multibench" or "sdk".
        variant: "aligned" (50 word-aligned steps) or "unaligned" (frame-rate sequences).
        sdk_vision: SDK vision sequence: "facet42" (35-d, as MultiBench), "facet41" (47-d, MOSI only) or
            "openface".
        folds: SDK only: the standard folds file (``cmu_<name>_std_folds.py`` or JSON); default: found next to
            the .csd files.
    """

    def __init__(self, spec: AffectSpec) -> None:
        self.spec = spec

    def features(self, root: str | Path, *, release: str = "auto", variant: str = "aligned",
                 sdk_vision: str = "facet42", folds: str | None = None) -> Features:
        """The field schema of the release found under ``root`` (dims, lengths, emotions depend on it)."""
        return reader.features(self.spec, root, Options(release, variant, sdk_vision, folds))

    def sources(self, root: str | Path, *, release: str = "auto", variant: str = "aligned",
                sdk_vision: str = "facet42", folds: str | None = None) -> list[Path]:
        """The raw files read (one pickle, or the .csd files and the folds file)."""
        return reader.sources(self.spec, root, Options(release, variant, sdk_vision, folds))

    def describe(self, root: str | Path, *, release: str = "auto", variant: str = "aligned",
                 sdk_vision: str = "facet42", folds: str | None = None) -> str:
        """Which release family, variant and files were found, in words."""
        return reader.describe(self.spec, root, Options(release, variant, sdk_vision, folds))

    def iter_samples(self, root: str | Path, split: str, *, release: str = "auto", variant: str = "aligned",
                     sdk_vision: str = "facet42", folds: str | None = None) -> Iterator[Sample | Skip]:
        """Samples of one split, one Sample or Skip per raw row (pickle row or SDK label segment).

        Args:
            root: a folder holding a release, or one pickle / .csd file.
            split: "train", "valid" or "test".
            release, variant, sdk_vision, folds: see the class docstring.

        Yields:
            Samples with feat_text, feat_audio, feat_vision [time, dim], text (MMSA; SDK with a words sequence),
            meta_emotions [6] (MOSEI, when the release has emotions) and label, or Skips naming the file, the
            key and the problem.

        Raises:
            ConfigError: bad option, missing root or no matching release.
            BadInputError: arrays of one pickle split disagree on the number of rows.
        """
        return reader.iter_samples(self.spec, root, split, Options(release, variant, sdk_vision, folds))

    def iter_part(self, root: str | Path, split: str, start: int, stop: int | None, *, release: str = "auto",
                  variant: str = "aligned", sdk_vision: str = "facet42",
                  folds: str | None = None) -> Iterator[Sample | Skip]:
        """Raw items ``start .. stop - 1`` of :meth:`iter_samples` (None: to the end); see
        :func:`.reader.iter_samples` for what a part reads."""
        return reader.iter_samples(self.spec, root, split, Options(release, variant, sdk_vision, folds), start, stop)

    def count_raw(self, root: str | Path, split: str, *, release: str = "auto", variant: str = "aligned",
                  sdk_vision: str = "facet42", folds: str | None = None) -> RawCount:
        """Raw items of one split without building samples: pickle rows, or SDK opinion segments of the folds."""
        return count.count_raw(self.spec, root, split, Options(release, variant, sdk_vision, folds))

    def corpus(self, splits: tuple[str, ...]) -> Corpus:
        """The registry entry of this corpus."""
        return Corpus(name=self.spec.name, splits=splits, task="regression", features=self.features,
                      iter_samples=self.iter_samples, sources=self.sources, describe=self.describe,
                      count_raw=self.count_raw, iter_part=self.iter_part)
