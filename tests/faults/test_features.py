"""6.8 Feature arrays: the dtype cast of MOSI/MOSEI features is recorded, and a constant feature field is flagged
by the writer (counted in the report, never skipped)."""
from __future__ import annotations

import pickle

import numpy as np

from mmdata.corpora import mosi
from mmdata.corpora.base import REPAIRS
from mmdata.shards.write import write_split
from mmdata.synth.mosi import generate
from tests.conftest import TOY_FEATURES, toy_samples
from tests.faults._helpers import split_items


def test_fea_02_float64_features_are_cast_to_float32_and_the_cast_is_recorded(tmp_path):
    """FEA-02: a release whose feature arrays are float64 is stored as float32 (what MMSA's and MulT's loaders
    train on), and every sample carries repair ``cast_float64_to_float32``; a float32 release carries none."""
    root = generate(tmp_path / "raw", seed=0, train=6, valid=3, test=3)
    with open(root / "mosi_data.pkl", "rb") as handle:
        data = pickle.load(handle)
    for name in ("text", "audio", "vision"):
        data["train"][name] = data["train"][name].astype(np.float64)
    with open(tmp_path / "f64.pkl", "wb") as handle:
        pickle.dump(data, handle, protocol=4)
    plain, skips = split_items(list(mosi.iter_samples(root / "mosi_data.pkl", "train")))
    cast, more = split_items(list(mosi.iter_samples(tmp_path / "f64.pkl", "train")))
    assert not skips and not more and len(cast) == len(plain) == 6
    assert all("cast_float64_to_float32" in s[REPAIRS] for s in cast)
    assert not any("cast_float64_to_float32" in s.get(REPAIRS, ()) for s in plain)
    for before, after in zip(plain, cast):
        assert after["feat_vision"].dtype == np.float32
        np.testing.assert_array_equal(before["feat_vision"], after["feat_vision"])


def test_fea_03_constant_feature_fields_are_flagged_never_skipped(tmp_path):
    """FEA-03: a ``feat_*`` field that is all zero or all one value is counted as ``degenerate_feature:<field>``
    in the report's flags and still written; a zero row inside a field (the releases' padding) is no flag."""
    samples = toy_samples(12)
    samples[2]["feat_audio"] = np.zeros((4, 3), np.float32)
    samples[5]["feat_audio"] = np.full((2, 3), 0.5, np.float32)
    samples[7]["feat_audio"] = np.concatenate([np.zeros((3, 3), np.float32), samples[7]["feat_audio"]])
    report = write_split(samples, TOY_FEATURES, tmp_path / "s", corpus="toy", split="train")["report"]
    assert report["written"] == 12 and report["skipped"] == 0
    assert report["flags"] == {"degenerate_feature:feat_audio": 2}
