"""Raw item counts of the MOSI / MOSEI releases for ``count_raw``, without building any sample.

The unit is the one each release counts in and the reader yields one Sample or Skip for: a pickle row (MMSA,
MulT, MultiBench: ``len(data[split]["id"])``), or an SDK opinion segment (a row of the labels sequence) of a
fold video, where a fold video absent from the labels file counts as one (the reader skips it whole).
"""
from __future__ import annotations

from pathlib import Path

import h5py

from mmdata.corpora.affect import reader, sdk
from mmdata.corpora.affect.spec import SPLITS, AffectSpec, Options
from mmdata.corpora.base import RawCount
from mmdata.corpora.ledger import check_split, raw_count


def count_raw(spec: AffectSpec, root: str | Path, split: str, options: Options) -> RawCount:
    """Raw items of ``split`` in the release found under ``root`` (see the module docstring).

    Raises:
        ConfigError: unknown split or option, missing root or release.
    """
    check_split(spec.name, split, SPLITS)
    loc, payload = reader.locate(spec, root, options)
    if loc.family != "sdk":
        # A pickle has no random access: every part would load it whole (one copy per Ray worker).
        return raw_count(len(payload[split].get("id", ())), "pickle row", [loc.path.parent], parted=False)
    seqs, (_, folds) = payload
    labels = seqs["labels"]
    with h5py.File(labels.path, "r") as f:
        group = f[labels.root]["data"]
        total = sum(sdk.segments(group, video) for video in folds[split])
    return raw_count(total, "opinion segment of a fold video", [loc.path])
