"""Fixed-shape npy members read straight into the batch array (mmdata.shards.direct) and the fast crc32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdata.errors import ShardIntegrityError
from mmdata.shards import verified
from mmdata.shards.read import SplitShards
from tests.conftest import toy_samples
from tests.test_reader_fast import _flip, _member, _reader


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts as a new process would: nothing verified, nothing cached."""
    verified.forget()
    yield
    verified.forget()


def test_fixed_shape_npy_rows_are_views_of_the_batch_array_that_collate_hands_on(toy_split):
    from mmdata.shards.collate import collate

    shards = SplitShards.open(toy_split)
    written = {s["__key__"]: s for s in toy_samples(40)}
    reader = _reader(toy_split, ["image", "label"])
    rows = [5, 31, 0, 17, 22, 8]
    samples = reader.read_batch(rows)
    for sample in samples:
        assert not sample["image"].flags.writeable  # an in-place augment fails as on any decoded npy member
        np.testing.assert_array_equal(sample["image"], written[sample["__key__"]]["image"])
    batch = collate(samples, shards.features, ["image", "label"])
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (6, 8, 8)
    np.testing.assert_array_equal(batch["image"].numpy(), np.stack([written[k]["image"] for k in batch["__key__"]]))
    batch["image"][0] += 1  # the batch is writable, as a stacked one is
    again = collate(samples, shards.features, ["image", "label"])  # a second collate copies
    assert again["image"].data_ptr() != batch["image"].data_ptr()
    np.testing.assert_array_equal(again["image"].numpy(), batch["image"].numpy())


def test_augmented_or_repeated_rows_are_stacked_with_the_same_values(toy_split):
    from mmdata.shards.collate import collate

    shards = SplitShards.open(toy_split)
    reader = _reader(toy_split, ["image"])
    plain = collate(reader.read_batch([3, 9, 12]), shards.features, ["image"])["image"]
    flipped = [{**s, "image": s["image"][::-1]} for s in reader.read_batch([3, 9, 12])]  # views of the same rows
    np.testing.assert_array_equal(collate(flipped, shards.features, ["image"])["image"].numpy(),
                                  plain.numpy()[:, ::-1])
    padded = reader.read_batch([3, 9, 3])  # a repeated row: one decode, stacked
    assert padded[0]["image"] is padded[2]["image"]
    np.testing.assert_array_equal(collate(padded, shards.features, ["image"])["image"].numpy(),
                                  plain.numpy()[[0, 1, 0]])


@pytest.mark.parametrize("where", [0, 8, 127, 128, 128 + 63])  # npy magic, header text, header end, data
def test_a_flip_in_a_member_read_into_the_batch_array_is_named(toy_split, where):
    path, offset = _member(toy_split, 13, "image")
    _flip(path, offset + where)
    with pytest.raises(ShardIntegrityError, match=rf"{path.name}.*toy/train/s0013 field image.*checksum mismatch"):
        _reader(toy_split, ["image", "label"]).read_batch([2, 13, 30])


def test_a_shard_truncated_inside_batch_array_data_is_named(toy_split):
    reader = _reader(toy_split, ["image"])
    reader.read_batch([39])
    path, offset = _member(toy_split, 39, "image")
    with open(path, "r+b") as handle:
        handle.truncate(offset + 128 + 10)
    with pytest.raises(ShardIntegrityError, match=rf"{path.name}.*toy/train/s0039 field image.*truncated"):
        verified.forget()
        reader.read_batch([0, 39])


def test_members_with_another_npy_header_are_parsed(toy_split):
    import dataclasses

    from mmdata.shards.collate import collate

    shards = SplitShards.open(toy_split)
    written = {s["__key__"]: s for s in toy_samples(40)}
    reader = _reader(toy_split, ["image"])
    lay = reader.layouts["image"]
    reader.layouts["image"] = dataclasses.replace(lay, prefix=lay.prefix.replace(b"False", b"Fals\x00"))
    samples = reader.read_batch([4, 20, 33])
    batch = collate(samples, shards.features, ["image"])["image"].numpy()
    np.testing.assert_array_equal(batch, np.stack([written[s["__key__"]]["image"] for s in samples]))


def test_the_fast_crc32_equals_zlibs():
    import zlib

    from mmdata.shards import crc

    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 100_003, dtype=np.uint8)
    rows = data[:99_000].reshape(99, 1000)
    rows.flags.writeable = False
    for part in (b"", data.tobytes(), memoryview(data.tobytes())[7:50_001], rows[3], data[:1]):
        for start in (0, 1, 0xFFFFFFFF, zlib.crc32(b"npy header")):
            assert crc.crc32(part, start) == zlib.crc32(part, start)
    assert crc.crc32(b"cd", crc.crc32(rows[5], crc.crc32(b"ab"))) == zlib.crc32(b"ab" + rows[5].tobytes() + b"cd")
    try:
        from isal.isal_zlib import crc32 as isal_crc32
    except ImportError:
        pytest.skip("isal not installed: the zlib fallback is the implementation")
    assert crc.IMPLEMENTATION == "isal"
    assert isal_crc32(data, 12345) == zlib.crc32(data, 12345)


def test_without_isal_the_crc32_is_zlibs(monkeypatch):
    import importlib
    import sys
    import zlib

    from mmdata.shards import crc

    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)  # as if the extra were not installed
    try:
        importlib.reload(crc)
        assert crc.IMPLEMENTATION == "zlib" and crc.crc32 is zlib.crc32
    finally:
        monkeypatch.undo()
        importlib.reload(crc)
