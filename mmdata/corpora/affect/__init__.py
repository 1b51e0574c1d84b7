"""Shared reading of the CMU-MOSI / CMU-MOSEI releases (used by :mod:`mmdata.corpora.mosi` and ``mosei``).

The two corpora come in the same four release families (see /work/shared/corpora.md section 4):

- ``mmsa``: thuiar/MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl`` (BERT text, raw transcripts, lengths);
- ``mult``: MulT ``<name>_data.pkl`` / ``<name>_data_noalign.pkl`` (GloVe text, labels [N, 1, 1]);
- ``multibench``: MultiBench ``<name>_raw.pkl`` (word-aligned GloVe / COVAREP / FACET, ids ``video[k]``);
- ``sdk``: CMU-MultimodalSDK ``.csd`` HDF5 computational sequences, aligned here to the opinion segments.

:mod:`.reader` finds and names the release, :mod:`.pickles` and :mod:`.sdk` turn it into rows, and
:mod:`.rows` holds the checks every row passes, so the corpus modules only declare provenance and dims.
"""
