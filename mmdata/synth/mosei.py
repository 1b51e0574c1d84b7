"""Synthetic mini CMU-MOSEI in its real release layouts, every release holding the same clips.

Files written under ``out``, per ``releases`` (shapes as in /work/shared/corpora.md section 4):

- ``mmsa``: ``MOSEI/Processed/{aligned_50,unaligned_50}.pkl``: BERT-like text [N, 50, 768], COVAREP audio
  [N, L, 74], FACET 4.2 vision [N, L, 35] (unaligned L = 500 / 500 with lengths), raw text, labels.
- ``mult``: ``mosei_senti_data.pkl`` / ``mosei_senti_data_noalign.pkl``: GloVe text, the same audio/vision,
  labels [N, 1, 1], ids [N, 3].
- ``multibench``: ``mosei_raw.pkl`` (GloVe / COVAREP / FACET 4.2, word-aligned, ids ``"video[k]"``).
- ``sdk`` (default): ``cmumosei/CMU_MOSEI_{TimestampedWords,TimestampedWordVectors,COVAREP,VisualFacet42,
  Labels}.csd``, the labels sequence ``All Labels`` holding [sentiment, happy, sad, anger, surprise, disgust,
  fear] per segment, and ``cmumosei/cmu_mosei_std_folds.py``.

Only the SDK labels carry the six emotions (in [0, 3], on a 1/3 grid: the mean of three annotators); the
pickles hold sentiment only, as the real MMSA/MulT MOSEI files do. Signal: see :mod:`mmdata.synth.affect.data`.
"""
from __future__ import annotations

from pathlib import Path

from mmdata.synth import affect
from mmdata.synth.affect.spec import SynthSpec

SPEC = SynthSpec(
    name="mosei", title="CMU-MOSEI", mmsa_dir="MOSEI/Processed",
    mult_files=("mosei_senti_data.pkl", "mosei_senti_data_noalign.pkl"), multibench_file="mosei_raw.pkl",
    sdk_dir="cmumosei", sdk_prefix="CMU_MOSEI", vision={"facet42": (35, "VisualFacet42", "FACET 4.2")},
    labels=("Labels", "All Labels"), pickle_audio=None, pickle_vision=("facet42", None),
    multibench_vision="facet42", unaligned_len={"audio": 500, "vision": 500}, emotions=True,
)


def generate(out: Path, *, seed: int = 0, train: int = 200, valid: int = 50, test: int = 100,
             releases: tuple[str, ...] = ("sdk",)) -> Path:
    """Write the MOSEI mini's release files under ``out``.

    Args:
        out: output directory (created).
        seed: base seed; the same seed gives byte-identical files.
        train, valid, test: clips per split (video-disjoint splits, SDK standard folds).
        releases: which releases to write: "mmsa", "mult", "multibench", "sdk" (default: the SDK release,
            the raw route that also carries the emotion labels and stays small without BERT text).

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.mosei`.
    """
    return affect.generate(SPEC, out, seed=seed, sizes={"train": train, "valid": valid, "test": test},
                           releases=tuple(releases))
