"""CMU-MOSEI sentiment (regression in [-3, 3]) and emotions from any of its four releases.

Releases (detected, and named by :func:`describe`; shared code in :mod:`mmdata.corpora.affect`):

- MMSA ``MOSEI/Processed/{aligned_50,unaligned_50}.pkl``: BERT text [50, 768], raw transcript, COVAREP
  audio [., 74], FACET 4.2 vision [., 35] (unaligned 500 / 500 with lengths). Split sizes 16,326 / 1,871 /
  4,659. The MMSA MOSEI pickle from BaiduYun is often truncated (MMSA#98): the reader says so.
- MulT ``mosei_senti_data.pkl`` / ``mosei_senti_data_noalign.pkl``: GloVe text [50, 300], 74 / 35-dim audio /
  vision, labels [N, 1, 1].
- MultiBench ``mosei_raw.pkl``: word-aligned GloVe / COVAREP / FACET 4.2; label rows of 7 values
  ([sentiment, 6 emotions], which MultiBench's loader handles) are accepted.
- CMU-MultimodalSDK ``CMU_MOSEI_*.csd`` (TimestampedWordVectors, COVAREP, VisualFacet42, Labels = "All Labels"
  rows [sentiment, happy, sad, anger, surprise, disgust, fear]), aligned here to the segments, split by the
  SDK's standard folds (2,249 / 300 / 678 videos) from ``cmu_mosei_std_folds.py`` (``folds`` option).

The emotions are kept beside the sentiment as ``meta_emotions`` [6] (each in [0, 3]) when the release has
them (the SDK labels; MultiBench 7-value labels); the sentiment is the ``label``. Keys are
``mosei/<split>/<video>_<clip>`` in every release (SDK segment ``k`` is clip ``k + 1``).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmdata.corpora.affect import count, reader
from mmdata.corpora.affect.spec import AffectSpec, Options
from mmdata.corpora.base import Corpus, RawCount, Skip
from mmdata.types import Features, Sample

NAME = "mosei"
SPLITS = ("train", "valid", "test")
#: Clips per split in the MMSA/MulT releases (the SDK route gives e.g. 16,127 / 1,835 / 4,625).
SPLIT_SIZES = {"train": 16326, "valid": 1871, "test": 4659}
MMSA_URL = "https://github.com/thuiar/MMSA (Google Drive link; the BaiduYun copy is often truncated, MMSA#98)"
MULT_URL = "https://github.com/yaohungt/Multimodal-Transformer (README data link)"
MULTIBENCH_URL = "https://github.com/pliang279/MultiBench (README, Affective Computing)"
SDK_URL = "https://github.com/CMU-MultiComp-Lab/CMU-MultimodalSDK (mmdatasdk.cmu_mosei.highlevel / labels)"
SPEC = AffectSpec(
    name=NAME, title="CMU-MOSEI", split_sizes=SPLIT_SIZES,
    mmsa_dirs=("MOSEI/Processed", "Processed", "."),
    mult_files={"aligned": "mosei_senti_data.pkl", "unaligned": "mosei_senti_data_noalign.pkl"},
    multibench_file="mosei_raw.pkl",
    sdk_dirs=("cmumosei", "CMU_MOSEI", "sdk"),
    dims={family: {"text": 768 if family == "mmsa" else 300, "audio": 74, "vision": 35}
          for family in ("mmsa", "mult", "multibench")},
    audio_kind={"mmsa": "COVAREP", "mult": "COVAREP", "multibench": "COVAREP"},
    vision_kind={"mmsa": "FACET 4.2", "mult": "FACET 4.2", "multibench": "FACET 4.2"},
)


def features(root: str | Path, *, release: str = "auto", variant: str = "aligned", sdk_vision: str = "facet42",
             folds: str | None = None) -> Features:
    """The field schema of the release found under ``root`` (dims, lengths, emotions depend on it)."""
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
        sdk_vision: SDK vision sequence: "facet42" (35-d) or "openface".
        folds: SDK only: the standard folds file (``cmu_mosei_std_folds.py`` or JSON); default: found next to
            the .csd files.

    Yields:
        Samples with feat_text, feat_audio [time, 74], feat_vision [time, 35], text (MMSA; SDK with a words
        sequence), meta_emotions [6] (when the release has emotions) and label, or Skips naming the file, the
        key and the problem.

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
