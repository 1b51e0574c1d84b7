"""What the writer reports about written samples without skipping them: duplicate content and degenerate features.

Duplicate content (reliability.md SMP-03): every written sample's content digest is the sha256 of its stored
payloads (the bytes the shard holds), ``label`` and ``meta_*`` fields left out, so one image under two ids with
two labels is found too. Samples sharing a digest form a group, reported in the manifest's
``report.duplicate_content`` (how many groups and samples, and the keys of each group). Both samples stay: one
recording under two ids can be legitimate (a poster shared by two movies, a clip released twice), and which one
to keep is the user's call. Within one split only (a digest is not stored per sample). The in-batch samplers do
not read these groups, so two equal-content items can still be paired as negatives.

Degenerate features (FEA-03): a ``feat_*`` float field whose values are all equal (most often all zero: a face
tracker that found no face, an extractor that failed) is flagged ``degenerate_feature:<field>`` and counted in the
report's ``flags``. A flag, not a skip: zero rows are the releases' own padding (aligned MOSI/MOSEI sequences are
left-zero-padded to 50 steps) and the reference loaders train on such clips; only a whole constant field is
flagged, never a zero row.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import numpy as np

from mmdata.types import Features, Sample, field_modality

#: Duplicate groups listed in the report (all are counted); a release with a systematic fault would list thousands.
MAX_LISTED = 100


class ContentAudit:
    """Collects content digests and feature flags of the samples a split writes, in writing order."""

    def __init__(self, features: Features) -> None:
        """Picks the content fields (by position among the sorted field names) and the feature fields of a schema."""
        names = sorted(features)
        self._content = [i for i, n in enumerate(names) if field_modality(n) not in ("label", "meta")]
        self._features = [n for n in names if field_modality(n) == "feat" and features[n].dtype.startswith("float")]
        self._first: dict[bytes, str] = {}
        self._groups: dict[bytes, list[str]] = {}
        self._flags: Counter = Counter()

    def add(self, key: str, sample: Sample, payloads: list[bytes]) -> None:
        """Record one written sample.

        Args:
            key: its key.
            sample: its field values (arrays, as checked by the writer).
            payloads: its encoded fields, in sorted field-name order (as the writer stores them).
        """
        if self._content:  # a schema of labels and metadata only has no content to compare
            digest = hashlib.sha256()
            for i in self._content:  # each payload's length first: field boundaries are part of the content
                digest.update(len(payloads[i]).to_bytes(8, "little"))
                digest.update(payloads[i])  # not concatenated first: that would copy every payload
            first = self._first.setdefault(digest.digest(), key)
            if first != key:
                self._groups.setdefault(digest.digest(), [first]).append(key)
        for name in self._features:
            value = np.asarray(sample[name])
            if value.size and bool((value == value.flat[0]).all()):
                self._flags[f"degenerate_feature:{name}"] += 1

    def merge(self, other: ContentAudit) -> None:
        """Fold in the audit of samples written after this one's (a later shard task), as if one audit had
        seen both in order: a digest first seen in ``other`` keeps its first key unless this audit saw it."""
        for digest, first in other._first.items():
            group = other._groups.get(digest, [first])
            if digest not in self._first:
                self._first[digest] = first
                if len(group) > 1:
                    self._groups[digest] = list(group)
            else:
                self._groups.setdefault(digest, [self._first[digest]]).extend(group)
        self._flags.update(other._flags)

    def report(self) -> dict[str, Any]:
        """``duplicate_content`` (groups, samples, keys of the first :data:`MAX_LISTED` groups) and ``flags``."""
        groups = sorted(self._groups.values())
        return {"duplicate_content": {"groups": len(groups), "samples": sum(len(g) for g in groups),
                                      "keys": groups[:MAX_LISTED]},
                "flags": dict(sorted(self._flags.items()))}
