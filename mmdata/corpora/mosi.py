"""CMU-MOSI sentiment (regression in [-3, 3]) from any of its four releases.

Releases (detected, and named by :func:`describe`; shared code in :mod:`mmdata.corpora.affect`):

- MMSA ``MOSI/Processed/{aligned_50,unaligned_50}.pkl``: BERT text [50, 768], raw transcript, COVAREP
  subset audio [., 5], FACET 4.1 subset vision [., 20]; unaligned audio/vision trimmed to their lengths.
- MulT ``mosi_data.pkl`` / ``mosi_data_noalign.pkl``: GloVe text [50, 300], the same 5/20-dim audio/vision.
- MultiBench ``mosi_raw.pkl``: word-aligned GloVe [50, 300], COVAREP [50, 74], FACET [50, 35].
- CMU-MultimodalSDK ``CMU_MOSI_*.csd``: word vectors, COVAREP (74), Visual_Facet_41 (47) / _42 (35), opinion
  segment labels; aligned here to the segments (see :mod:`mmdata.corpora.affect.sdk`), split by the SDK's
  standard folds (52 / 10 / 31 videos) read from ``cmu_mosi_std_folds.py`` (``folds`` option).

A clip is keyed ``mosi/<split>/<video>_<clip>`` in every release (SDK segment ``k`` is clip ``k + 1``), so
shards built from different releases line up; fields shared by two releases hold the same values when the
releases hold the same data.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmdata.corpora.affect import count, reader
from mmdata.corpora.affect.spec import AffectSpec, Options
from mmdata.corpora.base import Corpus, RawCount, Skip
from mmdata.types import Features, Sample

NAME = "mosi"
SPLITS = ("train", "valid", "test")
#: Clips per split in the MMSA/MulT releases (the SDK route gives slightly different counts).
SPLIT_SIZES = {"train": 1284, "valid": 229, "test": 686}
MMSA_URL = "https://github.com/thuiar/MMSA (Google Drive / BaiduYun links in README)"
MULT_URL = "https://github.com/yaohungt/Multimodal-Transformer (README data link)"
MULTIBENCH_URL = "https://github.com/pliang279/MultiBench (README, Affective Computing)"
SDK_URL = "https://github.com/CMU-MultiComp-Lab/CMU-MultimodalSDK (mmdatasdk.cmu_mosi.highlevel / labels)"
SPEC = AffectSpec(
    name=NAME, title="CMU-MOSI", split_sizes=SPLIT_SIZES,
    mmsa_dirs=("MOSI/Processed", "Processed", "."),
    mult_files={"aligned": "mosi_data.pkl", "unaligned": "mosi_data_noalign.pkl"},
    multibench_file="mosi_raw.pkl",
    sdk_dirs=("cmumosi", "CMU_MOSI", "sdk"),
    dims={"mmsa": {"text": 768, "audio": 5, "vision": 20}, "mult": {"text": 300, "audio": 5, "vision": 20},
          "multibench": {"text": 300, "audio": 74, "vision": 35}},
    audio_kind={"mmsa": "COVAREP subset", "mult": "COVAREP subset", "multibench": "COVAREP"},
    vision_kind={"mmsa": "FACET 4.1 subset", "mult": "FACET 4.1 subset", "multibench": "FACET"},
)


def features(root: str | Path, *, release: str = "auto", variant: str = "aligned", sdk_vision: str = "facet42",
             folds: str | None = None) -> Features:
    """The field schema of the release found under ``root`` (dims and lengths depend on it)."""
    return reader.features(SPEC, root, Options(release, variant, sdk_vision, folds))


def sources(root: str | Path, *, release: str = "auto", variant: str = "aligned", sdk_vision: str = "facet42",
            folds: str | None = None) -> list[Path]:
    """The raw files read (one pickle, or the .csd files and the folds file)."""
    return reader.sources(SPEC, root, Options(release, variant, sdk_vision, folds))


def describe(root: str | Path, *, release: str = "auto", variant: str = "aligned", sdk_vision: str = "facet42",
             folds: str | None = None) -> str:
    """Which release family, variant and files were found, in words."""
    return reader.describe(SPEC, root, Options(release, variant, sdk_vision, folds))


def iter_samples(root: str | Path, split: str, *, release: str = "auto", variant: str = "aligned",
                 sdk_vision: str = "facet42", folds: str | None = None) -> Iterator[Sample | Skip]:
    """Samples of one split, one Sample or Skip per raw row (pickle row or SDK label segment).

    Args:
        root: a folder holding a release, or one pickle / .csd file.
        split: "train", "valid" or "test".
        release: "auto" (MMSA, then MulT, MultiBench, SDK), "mmsa", "mult", "multibench" or "sdk".
        variant: "aligned" (50 word-aligned steps) or "unaligned" (frame-rate sequences).
        sdk_vision: SDK vision sequence: "facet42" (35-d, as MultiBench), "facet41" (47-d) or "openface".
        folds: SDK only: the standard folds file (``cmu_mosi_std_folds.py`` or JSON); default: found next to
            the .csd files.

    Yields:
        Samples with feat_text, feat_audio, feat_vision [time, dim], text (MMSA; SDK with a words sequence)
        and label, or Skips naming the file, the key and the problem.

    Raises:
        ConfigError: bad option, missing root or no matching release.
        ValueError: arrays of one pickle split disagree on the number of rows.
    """
    return reader.iter_samples(SPEC, root, split, Options(release, variant, sdk_vision, folds))


def count_raw(root: str | Path, split: str, *, release: str = "auto", variant: str = "aligned",
              sdk_vision: str = "facet42", folds: str | None = None) -> RawCount:
    """Raw items of one split without building samples: pickle rows, or SDK opinion segments of the fold videos.

    Args:
        root, split, release, variant, sdk_vision, folds: as for :func:`iter_samples`.
    """
    return count.count_raw(SPEC, root, split, Options(release, variant, sdk_vision, folds))


CORPUS = Corpus(name=NAME, splits=SPLITS, task="regression", features=features, iter_samples=iter_samples,
                sources=sources, describe=describe, count_raw=count_raw)
