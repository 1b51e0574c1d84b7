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

from mmdata.corpora.affect.entry import AffectReader
from mmdata.corpora.affect.spec import AffectSpec

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

#: The reader entry points; their options are documented in :class:`.affect.entry.AffectReader`.
READER = AffectReader(SPEC)
features, sources, describe = READER.features, READER.sources, READER.describe
iter_samples, count_raw, iter_part = READER.iter_samples, READER.count_raw, READER.iter_part

CORPUS = READER.corpus(SPLITS)
