"""The batched member reader: same samples as one row at a time, shared decodes, verified-once integrity."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mmdata.errors import ShardIntegrityError
from mmdata.shards import verified
from mmdata.shards.codec import _decode_image, decoder, encode
from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX
from mmdata.shards.read import SplitShards
from mmdata.shards.members import MemberReader
from mmdata.shards.write import write_split
from mmdata.types import Field, View
from tests.conftest import toy_samples


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts as a new process would: nothing verified, nothing cached."""
    verified.forget()
    yield
    verified.forget()


def _reader(directory: Path, fields=None) -> MemberReader:
    shards = SplitShards.open(directory)
    return MemberReader(directory, shards.stored, shards.index, fields or list(shards.features), view=shards.view,
                        label=shards.label)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


@pytest.mark.parametrize("fields", [None, ["feat_audio", "label"], ["text"], ["image", "label", "text"]])
def test_read_batch_equals_the_written_samples_and_read(toy_split, fields):
    written = {s["__key__"]: s for s in toy_samples(40)}
    reader = _reader(toy_split, fields)
    rows = np.random.default_rng(0).permutation(40)[:25].tolist() + [3, 3, 17]  # repeats: padded rows
    batch = reader.read_batch(rows)
    for row, sample in zip(rows, batch):
        _same(sample, reader.read(row))
        _same(sample, {"__key__": sample["__key__"], **{n: written[sample["__key__"]][n] for n in reader.names}})
    assert [s["__key__"] for s in batch] == [f"toy/train/s{r:04d}" for r in rows]
    reader.close()


def _pairs(n: int) -> list[dict]:
    return [{"__key__": f"toy/train/img{i:03d}", "image": np.full((4, 4), i, np.uint8),
             "text": [f"caption {i}.{j}" for j in range(i % 3 + 1)], "label": [j % 2 for j in range(i % 3 + 1)],
             "__rows__": [{"id": f"c{j}", "label": j % 2, "pick": j} for j in range(i % 3 + 1)]} for i in range(n)]


@pytest.fixture
def pick_split(tmp_path: Path) -> Path:
    features = {"image": Field("uint8", (4, 4), "npy"), "text": Field("str", (None,), "json"),
                "label": Field("int64", (None,), "json", classes=("no", "yes"))}
    write_split(_pairs(12), features, tmp_path / "pick", corpus="toy", split="train", max_samples=4,
                view=View("pick", ("text",)))
    return tmp_path / "pick"


@pytest.fixture
def window_split(tmp_path: Path) -> Path:
    series = np.arange(400, dtype=np.float32).reshape(200, 2)
    sample = {"__key__": "toy/train/all", "series": series, "label": np.zeros(200, np.float32),
              "__rows__": [{"id": f"w{s}", "label": float(series[s + 10, 0]), "start": s} for s in range(190)]}
    features = {"series": Field("float32", (None, 2), "arrow"), "label": Field("float32", (None,), "npy")}
    write_split([sample], features, tmp_path / "win", corpus="toy", split="train", view=View("window", ("series",), 10))
    return tmp_path / "win"


@pytest.mark.parametrize("split", ["pick_split", "window_split"])
def test_shared_decodes_equal_unshared_ones_and_are_read_only(split, request):
    directory = request.getfixturevalue(split)
    reader = _reader(directory)
    rows = np.random.default_rng(1).permutation(len(reader.keys)).tolist()
    shared = reader.read_batch(rows)
    for row, sample in zip(rows, shared):
        verified.forget()  # every row decodes its stored sample alone
        _same(sample, _reader(directory).read_batch([row])[0])
    for sample in shared:
        for value in sample.values():
            if isinstance(value, np.ndarray) and value.ndim:
                assert not value.flags.writeable
                with pytest.raises(ValueError):
                    value[0] = 0  # an in-place augment cannot alter the other rows of the stored sample
    reader.close()


def test_rows_of_one_stored_sample_share_one_decode(pick_split):
    reader = _reader(pick_split, ["image", "text"])
    index = read_index(pick_split / INDEX)
    rows = np.flatnonzero(index["sample"] == "toy/train/img002")  # three captions of one image
    batch = reader.read_batch(rows)
    assert len(batch) == 3 and batch[0]["image"] is batch[1]["image"] is batch[2]["image"]
    assert [s["text"] for s in batch] == ["caption 2.0", "caption 2.1", "caption 2.2"]
    again = _reader(pick_split, ["image", "text"]).read_batch(rows[:1])  # a later batch: from the per-process cache
    np.testing.assert_array_equal(again[0]["image"], batch[0]["image"])


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 1]))


def _member(directory: Path, row: int, field: str) -> tuple[Path, int]:
    index = read_index(directory / INDEX)
    return directory / index["shard"][row], int(index[f"offset_{field}"][row])


@pytest.mark.parametrize("rows", [[2, 13, 30], list(range(40))])  # headers checked one by one, and with numpy
@pytest.mark.parametrize("where, message", [(0, "checksum mismatch"), (-512, "header names"),
                                            (-512 + 125, "header"), (-512 + 150, "header checksum")])
def test_first_read_of_a_batch_names_the_corrupt_member(toy_split, where, message, rows):
    path, offset = _member(toy_split, 13, "feat_audio")
    _flip(path, offset + where)  # payload, name, size or checksum field
    with pytest.raises(ShardIntegrityError, match=rf"{path.name}.*toy/train/s0013 field feat_audio.*{message}"):
        _reader(toy_split).read_batch(rows)


def test_a_shard_truncated_after_open_reads_short_and_is_named(toy_split):
    reader = _reader(toy_split)
    reader.read_batch([0, 39])  # opens the first and last shards
    path, offset = _member(toy_split, 39, "text")
    with open(path, "r+b") as handle:
        handle.truncate(offset)
    with pytest.raises(ShardIntegrityError, match=rf"{path.name}.*toy/train/s0039.*truncated"):
        verified.forget()
        reader.read_batch([39, 0])


def test_verified_once_until_the_shard_changes(toy_split, monkeypatch):
    monkeypatch.setattr(verified, "SETTLE_NS", 0)  # these shards were written a moment ago
    time.sleep(0.05)  # past the file system's time stamp tick
    reader = _reader(toy_split)
    reader.read_batch(range(40))
    path, offset = _member(toy_split, 7, "image")
    assert offset in verified._STATES[str(path)].verified  # the next epoch skips the crc32
    time.sleep(0.05)
    _flip(path, offset + 3)  # corruption between epochs: the shard's stat changes
    with pytest.raises(ShardIntegrityError, match=rf"{path.name}.*toy/train/s0007 field image.*checksum"):
        reader.read_batch([1, 7])


def test_a_shard_changed_within_the_settle_time_is_verified_every_read(toy_split):
    reader = _reader(toy_split)
    reader.read_batch(range(40))
    assert not any(state.verified for state in verified._STATES.values())  # just written: racy time stamps
    path, offset = _member(toy_split, 7, "image")
    _flip(path, offset + 3)
    with pytest.raises(ShardIntegrityError, match="checksum"):
        reader.read_batch([7])


def _smooth_rgb(seed: int, shape=(37, 53)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = np.stack([xx * 4, yy * 5, xx + yy], -1) + rng.integers(0, 40, (*shape, 3))
    return (base % 256).astype(np.uint8)


@pytest.mark.parametrize("codec", ["jpg", "png"])
def test_rgb_decode_gives_the_pixels_of_the_unchanged_decode(codec):
    field = Field("uint8", (37, 53, 3), codec)
    assert decoder(field) is not decoder(Field("uint16", (37, 53), codec))  # depth keeps IMREAD_UNCHANGED
    for seed in range(3):
        data = encode(_smooth_rgb(seed), field)
        fast = decoder(field)(memoryview(data))
        np.testing.assert_array_equal(fast, _decode_image(data))
        assert fast.dtype == np.uint8 and fast.shape == (37, 53, 3)


def test_grey_and_depth_images_keep_their_channels():
    depth = (np.arange(35, dtype=np.uint16) * 1800).reshape(5, 7)
    field = Field("uint16", (5, 7), "png")
    np.testing.assert_array_equal(decoder(field)(encode(depth, field)), depth)



def test_npy_batch_decode_equals_one_by_one_or_declines():
    from mmdata.shards.codec import _decode_npy, decode_npy_batch

    field = Field("float32", (3, 2), "npy")
    arrays = [np.arange(6, dtype=np.float32).reshape(3, 2) + i for i in range(5)]
    payloads = [memoryview(encode(a, field)) for a in arrays]
    batch = decode_npy_batch(payloads)
    assert batch.shape == (5, 3, 2) and batch.dtype == np.float32 and not batch.flags.writeable
    for row, payload in zip(batch, payloads):
        np.testing.assert_array_equal(row, _decode_npy(payload))
    other = memoryview(encode(np.zeros((2, 3), np.float32), Field("float32", (2, 3), "npy")))
    assert decode_npy_batch(payloads + [other]) is None  # another header (same byte count): one by one
    fortran = np.lib.format  # a Fortran-ordered payload is declined too
    buf = __import__("io").BytesIO()
    fortran.write_array(buf, np.asfortranarray(arrays[0]))
    assert decode_npy_batch([buf.getvalue()] * 2) is None

