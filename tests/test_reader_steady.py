"""The steady-state batch read (mmdata.shards.steady): members verified before are read with one preadv per sample
and give exactly what the checked first read gave; anything it cannot vouch for goes to the general path."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from mmdata.errors import ShardIntegrityError
from mmdata.shards import steady, verified
from mmdata.shards.collate import collate
from mmdata.shards.read import SplitShards
from tests.conftest import toy_samples
from tests.test_reader_fast import _member, _reader, _same


@pytest.fixture(autouse=True)
def settled_shards(monkeypatch):
    """Fresh process state, and shards written a moment ago count as settled (so members are recorded)."""
    verified.forget()
    monkeypatch.setattr(verified, "SETTLE_NS", 0)
    time.sleep(0.05)  # past the file system's time stamp tick
    yield
    verified.forget()


@pytest.fixture
def paths(monkeypatch) -> list[str]:
    """Which path each read took: "steady", or "general" when the steady read declined."""
    taken: list[str] = []
    original = steady.read_values

    def spy(*args, **kwargs):
        values = original(*args, **kwargs)
        taken.append("general" if values is None else "steady")
        return values

    monkeypatch.setattr(steady, "read_values", spy)
    return taken


@pytest.mark.parametrize("fields", [None, ["feat_audio", "label"], ["text"], ["image", "label", "text"], ["image"]])
def test_a_steady_read_gives_what_the_checked_first_read_gave(toy_split, paths, fields):
    shards = SplitShards.open(toy_split)
    written = {s["__key__"]: s for s in toy_samples(40)}
    reader = _reader(toy_split, fields)
    rows = np.random.default_rng(1).permutation(40)[:25].tolist() + [3, 3, 17]  # repeats: padded rows
    first = reader.read_batch(rows)
    again = reader.read_batch(rows)
    assert paths == ["general", "steady"]
    for a, b in zip(first, again):
        _same(a, b)
        assert list(a) == list(b)  # same field order
        for name in reader.names:
            assert np.asarray(b[name]).flags.writeable == np.asarray(a[name]).flags.writeable, name
            np.testing.assert_array_equal(np.asarray(b[name]), np.asarray(written[b["__key__"]][name]))
    names = list(reader.names)
    for name, tensor in collate(again, shards.features, names).items():
        expected = collate(first, shards.features, names)[name]
        np.testing.assert_array_equal(np.asarray(tensor), np.asarray(expected), err_msg=name)
    reader.close()


def test_fixed_shape_npy_data_lands_in_the_callers_batch_array(toy_split, paths):
    reader = _reader(toy_split, ["image", "label"])
    reader.read_batch(range(40))
    made = []

    def empty(shape, dtype):
        made.append(np.empty(shape, dtype))
        return made[-1]

    samples = reader.read_batch([5, 31, 0, 17], empty)
    assert paths[-1] == "steady" and len(made) == 1
    array, rows = samples.columns["image"]
    assert array is made[0] and all(s["image"] is row for s, row in zip(samples, rows))


@pytest.mark.parametrize("fields, cut", [(["image", "label"], "image"), (["feat_audio", "label"], "label")])
def test_a_steady_read_that_ends_early_names_the_sample(toy_split, monkeypatch, paths, fields, cut):
    """A shard cut short between the stat and the read (the record still current) is reported, not misread: in
    a range read into batch arrays, and in one read whole (no fixed-shape npy field)."""
    reader = _reader(toy_split, fields)
    reader.read_batch(range(40))
    states = dict(verified._STATES)
    path, offset = _member(toy_split, 39, cut)
    with open(path, "r+b") as handle:
        handle.truncate(offset)
    monkeypatch.setattr(verified, "shard_state", lambda shard, fd: states[shard])
    with pytest.raises(ShardIntegrityError, match=rf"{path.name}.*toy/train/s0039 field {cut}.*truncated"):
        reader.read_batch([0, 39])
    assert paths == ["general"]  # the first read; the second raised inside the steady read (it did not decline)


def test_members_with_another_npy_header_go_to_the_general_path(toy_split, paths):
    written = {s["__key__"]: s for s in toy_samples(40)}
    reader = _reader(toy_split, ["image"])
    reader.read_batch(range(40))
    lay = reader.layouts["image"]
    reader.layouts["image"] = dataclasses.replace(lay, prefix=lay.prefix.replace(b"False", b"Fals\x00"))
    samples = reader.read_batch([4, 20, 33])
    assert paths[-1] == "general"
    for sample in samples:
        np.testing.assert_array_equal(sample["image"], written[sample["__key__"]]["image"])


def test_members_not_verified_yet_go_to_the_general_path(toy_split, paths):
    reader = _reader(toy_split, ["image", "text"])
    reader.read_batch([1, 2, 3])
    reader.read_batch([2, 3, 4])  # row 4 is new: the whole batch is checked
    reader.read_batch([4, 3])
    assert paths == ["general", "general", "steady"]
