"""Synthetic mini CMU-MOSI in its real release layouts, every release holding the same clips.

Files written under ``out`` (shapes as in /work/shared/corpora.md section 4), per ``releases``:

- ``mmsa``: ``MOSI/Processed/aligned_50.pkl`` and ``unaligned_50.pkl``: BERT-like text [N, 50, 768],
  ``text_bert`` [N, 3, 50], audio [N, L, 5], vision [N, L, 20], raw text, ids ``"<video>$_$<clip>"``,
  annotations, classification and regression labels; unaligned adds ``audio_lengths`` / ``vision_lengths``.
- ``mult``: ``mosi_data.pkl`` / ``mosi_data_noalign.pkl``: GloVe-like text [N, 50, 300], the same audio and
  vision, ``labels`` [N, 1, 1], ids [N, 3] byte strings ``(video, clip, segment start)``.
- ``multibench``: ``mosi_raw.pkl``: word-aligned GloVe [N, 50, 300], COVAREP [N, 50, 74], FACET 4.2 [N, 50, 35],
  labels [N, 1, 1], ids ``"video[k]"`` (k = clip - 1).
- ``sdk``: ``cmumosi/CMU_MOSI_{TimestampedWords,TimestampedWordVectors,COVAREP,Visual_Facet_41,
  Visual_Facet_42,Opinion_Labels}.csd`` and ``cmumosi/cmu_mosi_std_folds.py``.

The 5-dim audio of MMSA/MulT is COVAREP columns [1, 3, 6, 25, 60] (SDK#172); the 20 FACET 4.1 columns the
real pickles keep are listed in SDK#116/#172 and not reproduced here: the mini keeps columns 0, 2, ..., 38 of
its 47-dim FACET 4.1 as a stand-in. Aligned sequences are the word means of the frames (the SDK alignment),
so a reader of any release gets the same keys, labels and shared features. Signal and speaker offsets are
described in :mod:`mmdata.synth.affect.data`; as in the releases, some audio values are ``-inf``.
"""
from __future__ import annotations

from pathlib import Path

from mmdata.synth import affect
from mmdata.synth.affect.spec import SynthSpec

COVAREP_SUBSET = (1, 3, 6, 25, 60)
FACET41_SUBSET = tuple(range(0, 40, 2))
SPEC = SynthSpec(
    name="mosi", title="CMU-MOSI", mmsa_dir="MOSI/Processed", mult_files=("mosi_data.pkl", "mosi_data_noalign.pkl"),
    multibench_file="mosi_raw.pkl", sdk_dir="cmumosi", sdk_prefix="CMU_MOSI",
    vision={"facet41": (47, "Visual_Facet_41", "FACET_4.1"), "facet42": (35, "Visual_Facet_42", "FACET_4.2")},
    labels=("Opinion_Labels", "Opinion Segment Labels"), pickle_audio=COVAREP_SUBSET,
    pickle_vision=("facet41", FACET41_SUBSET), multibench_vision="facet42",
    unaligned_len={"audio": 375, "vision": 500}, emotions=False,
)


def generate(out: Path, *, seed: int = 0, train: int = 160, valid: int = 40, test: int = 80,
             releases: tuple[str, ...] = ("mmsa", "mult")) -> Path:
    """Write the MOSI mini's release files under ``out``.

    Args:
        out: output directory (created).
        seed: base seed; the same seed gives byte-identical files.
        train, valid, test: clips per split (video-disjoint splits).
        releases: which releases to write: "mmsa", "mult", "multibench", "sdk" (default: the two pickle
            families the default pipeline reads; the MMSA files dominate the size with BERT text).

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.mosi`.
    """
    return affect.generate(SPEC, out, seed=seed, sizes={"train": train, "valid": valid, "test": test},
                           releases=tuple(releases))
