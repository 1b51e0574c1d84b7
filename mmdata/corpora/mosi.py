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

from mmdata.corpora.affect.entry import AffectReader
from mmdata.corpora.affect.spec import AffectSpec

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

#: The reader entry points; their options are documented in :class:`.affect.entry.AffectReader`.
READER = AffectReader(SPEC)
features, sources, describe = READER.features, READER.sources, READER.describe
iter_samples, count_raw, iter_part = READER.iter_samples, READER.count_raw, READER.iter_part

CORPUS = READER.corpus(SPLITS)
