"""6.11 Shard reading (and DVC-04, KEY-02 at read time): what ``mmdata.load`` and ``verify`` do with truncated,
bit-flipped, missing, replaced or hand-crafted shards and with a broken manifest or index.

The truncation and bit-flip tests are the exhaustive, asserting form of bench/faults.py's figures on a small
split: every 512-byte block boundary plus random offsets, and random single-bit flips plus one in every header.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

import mmdata
from mmdata.errors import ShardIntegrityError
from mmdata.rng import make_rng
from mmdata.shards.manifest import INDEX, MANIFEST
from mmdata.shards.verify import verify_split
from mmdata.shards.write import write_split
from tests.conftest import TOY_FEATURES, toy_samples, write_toy

RANDOM_TRIALS = 300


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """10 toy samples in 2 shards of 5 (a cheap split to damage hundreds of times)."""
    split = tmp_path / "toy" / "train"
    write_toy(split, n=10, max_samples=5)
    return split


def _digest(batch: dict) -> str:
    """sha256 over every field of a one-sample batch as delivered."""
    digest = hashlib.sha256()
    for name in sorted(batch):
        value = batch[name]
        digest.update(name.encode() + (value.numpy().tobytes() if hasattr(value, "numpy") else repr(value).encode()))
    return digest.hexdigest()


def _read(split: Path, delivered: dict[str, str] | None = None, **options) -> dict[str, str]:
    """key -> digest of every sample, one per batch, so what was delivered before an error is kept."""
    delivered = {} if delivered is None else delivered
    for batch in mmdata.load(split, shuffle=False, batch_size=1, **options):
        delivered[batch["__key__"][0]] = _digest(batch)
    return delivered


def _flagged(split: Path, shard: Path) -> bool:
    return any(shard.name in problem for problem in verify_split(split))


def _reopen_as_foreign(split: Path, shard: Path) -> None:
    """Record a hand-made shard's size and sha256 in the manifest, as a foreign writer would (the index stays)."""
    manifest = json.loads((split / MANIFEST).read_text())
    entry = next(s for s in manifest["shards"] if s["name"] == shard.name)
    entry["bytes"], entry["sha256"] = shard.stat().st_size, hashlib.sha256(shard.read_bytes()).hexdigest()
    (split / MANIFEST).write_text(json.dumps(manifest))


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def _end(member: tarfile.TarInfo) -> int:
    """Offset just past a member's payload blocks."""
    return member.offset_data + -(-member.size // 512) * 512


# --- SHR-01 / SHR-02: exhaustive truncation and bit flips ---


def test_shr_01_every_block_boundary_and_random_cut_is_a_named_error_with_no_partial_sample(small):
    """SHR-01: a shard cut at every 512-byte boundary (every member header included) and at 300 random offsets:
    ``mmdata.load`` raises ShardIntegrityError naming the shard every time, delivering no sample that differs
    from the intact one (0 partial samples), and ``verify`` flags the shard every time."""
    shard = sorted(small.glob("*.tar"))[0]
    data, reference = shard.read_bytes(), _read(small)
    assert {m.offset for m in _members(shard)} <= set(range(0, len(data), 512))
    cuts = list(range(0, len(data), 512)) + make_rng(0, "truncate").integers(1, len(data), RANDOM_TRIALS).tolist()
    for cut in cuts:
        shard.write_bytes(data[:cut])
        delivered: dict[str, str] = {}
        with pytest.raises(ShardIntegrityError, match=shard.name):
            _read(small, delivered)
        assert all(reference[key] == digest for key, digest in delivered.items()), cut
        assert _flagged(small, shard), cut


def test_shr_02_bit_flips_are_all_flagged_by_verify_and_never_read_silently(small):
    """SHR-02: 300 random single-bit flips plus one in every member header. ``verify`` and ``load(verify=True)``
    catch 100% (sha256). The plain read path (header check + payload crc32) raises a named error for every flip
    in a payload or outside a header's checksum field, and otherwise delivers the intact data (a flip in
    padding, end-of-archive or a checksum field's terminator changes nothing read): 0 altered samples."""
    shard = sorted(small.glob("*.tar"))[1]
    data, reference, members = shard.read_bytes(), _read(small), _members(shard)
    rng = make_rng(0, "flip")
    offsets = rng.integers(0, len(data), RANDOM_TRIALS).tolist() + [m.offset + int(rng.integers(0, 512))
                                                                      for m in members]
    payload = {i for m in members for i in range(m.offset_data, m.offset_data + m.size)}
    header = {i for m in members for i in range(m.offset, m.offset_data) if not 148 <= i - m.offset < 156}
    raised = 0
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 1 << int(rng.integers(0, 8))
        shard.write_bytes(bytes(flipped))
        assert _flagged(small, shard), offset
        with pytest.raises(ShardIntegrityError, match="sha256"):
            mmdata.load(small, verify=True)
        delivered: dict[str, str] = {}
        try:
            _read(small, delivered)
        except ShardIntegrityError as exc:
            assert shard.name in str(exc)
            raised += 1
        else:
            assert offset not in payload | header, offset  # a read byte was altered but nothing was said
        assert all(reference[key] == digest for key, digest in delivered.items()), offset
    assert raised >= len(members)  # at least every header flip outside the checksum field


# --- SHR-03 / SHR-05 / SHR-06: missing, broken or replaced files ---


def test_shr_03_a_missing_shard_fails_every_rank_at_open(small):
    """SHR-03: a shard listed in the manifest but deleted fails ``mmdata.load`` at open on every rank (also the
    rank that would not read it), before any batch; ``verify`` names it as missing."""
    shard = sorted(small.glob("*.tar"))[1]
    shard.unlink()
    for rank in (0, 1):
        with pytest.raises(ShardIntegrityError, match=f"{shard.name}: shard listed in the manifest is missing"):
            mmdata.load(small, world_size=2, rank=rank)
    assert f"{shard}: missing" in verify_split(small)


def _break(split: Path, name: str, how: str) -> None:
    path = split / name
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"{not json or parquet" * 10)
    else:  # another format version
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({**manifest, "format": "mmdata-shards/0"}))


@pytest.mark.parametrize("name, how", [(MANIFEST, "missing"), (MANIFEST, "empty"), (MANIFEST, "garbage"),
                                       (MANIFEST, "version"), (INDEX, "missing"), (INDEX, "empty"),
                                       (INDEX, "garbage")])
def test_shr_05_a_missing_empty_invalid_or_other_version_manifest_or_index_is_a_named_error(small, name, how):
    """SHR-05: mmdata's ``index.json`` is the pair manifest.json + index.parquet. Each missing, empty, invalid or
    of another format version is a one-line ShardIntegrityError from ``load`` naming the file (a folder without
    a manifest: the folder), and ``verify`` reports the file."""
    _break(small, name, how)
    # Without a manifest the folder is no split at all: the error names the folder and where else it looked.
    named = re.escape(str(small / name) if (name, how) != (MANIFEST, "missing") else f"{small}, ")
    with pytest.raises(ShardIntegrityError, match=named) as caught:
        mmdata.load(small)
    assert len(str(caught.value).splitlines()) == 1
    assert any(str(small / name) in problem for problem in verify_split(small))


def test_shr_06_a_shard_from_another_run_is_caught_naming_expected_and_actual(small, tmp_path):
    """SHR-06: another run's shard in place of one of ours. Of another size: ``load`` fails at open naming both
    sizes. Of the same size (same keys, other pixels): ``load(verify=True)`` and ``verify`` name both sha256s,
    and the plain read path fails at the first altered payload naming shard, key and field."""
    other = tmp_path / "other" / "toy" / "train"
    samples = toy_samples(10)
    write_split([{**s, "image": 255 - s["image"]} for s in samples], TOY_FEATURES, other, corpus="toy",
                split="train", max_samples=5)
    write_toy(tmp_path / "resized" / "toy" / "train", n=10, max_samples=4)
    shard = sorted(small.glob("*.tar"))[0]
    ours = hashlib.sha256(shard.read_bytes()).hexdigest()
    size = shard.stat().st_size
    resized = sorted((tmp_path / "resized" / "toy" / "train").glob("*.tar"))[0]
    shard.write_bytes(resized.read_bytes())
    with pytest.raises(ShardIntegrityError, match=rf"{shard.name}: {resized.stat().st_size} bytes, manifest says {size}"):
        mmdata.load(small)
    shard.write_bytes((other / shard.name).read_bytes())
    theirs = hashlib.sha256(shard.read_bytes()).hexdigest()
    assert shard.stat().st_size == size and theirs != ours
    with pytest.raises(ShardIntegrityError, match=rf"sha256 {theirs[:16]}.*says {ours[:16]}"):
        mmdata.load(small, verify=True)
    assert any(theirs[:16] in p and ours[:16] in p for p in verify_split(small))
    with pytest.raises(ShardIntegrityError, match=rf"{shard.name}: sample toy/train/s0000 field image: payload"):
        _read(small, fields=["image"])


# --- SHR-07 / SHR-08: hand-made tars (size and sha256 recorded, so only the structure is wrong) ---


def _member_bytes(name: str, payload: bytes) -> bytes:
    """One GNU tar member (header + padded payload) as the writer would store it."""
    buffer = io.BytesIO()
    with tarfile.TarFile(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()[:512 + -(-len(payload) // 512) * 512]


def test_shr_07_a_key_that_reappears_after_its_sample_ended_is_flagged_never_two_half_samples(small):
    """SHR-07: a text member of the shard's first sample appended after its last sample. A tar-stream reader
    (webdataset) yields that key twice, the second time as a one-field half sample; ``mmdata.load`` reads the
    index's members and delivers every sample once and intact, and ``verify`` flags the shard (the tar's key
    sequence has one sample more than the index)."""
    shard = sorted(small.glob("*.tar"))[0]
    reference, members = _read(small), _members(shard)
    data = shard.read_bytes()
    end = _end(members[-1])
    shard.write_bytes(data[:end] + _member_bytes("toy/train/s0000.text.txt", b"intruder") + b"\0" * 1024)
    _reopen_as_foreign(small, shard)
    keys = [s["__key__"] for s in wds.WebDataset([str(shard)], shardshuffle=False)]
    assert keys.count("toy/train/s0000") == 2  # the fault is real for a stream reader
    assert _read(small) == reference
    assert any(f"{shard.name}: 6 samples in the tar, manifest says 5, index lists 5" in p for p in verify_split(small))


def test_shr_08_a_field_missing_from_a_sample_is_named_by_shard_key_and_field(small):
    """SHR-08: the text member of a sample cut out of the tar. Reading that field fails naming shard, key and
    field; reading only other fields delivers every sample (only requested members are read); ``verify``
    names the missing member."""
    shard = sorted(small.glob("*.tar"))[0]
    members = _members(shard)
    victim = next(m for m in members if m.name == "toy/train/s0004.text.txt")
    data = shard.read_bytes()
    shard.write_bytes(data[:victim.offset] + data[_end(victim):])
    _reopen_as_foreign(small, shard)
    with pytest.raises(ShardIntegrityError, match=rf"{shard.name}: sample toy/train/s0004 field text"):
        _read(small, fields=["text"])
    assert len(_read(small, fields=["image", "label"])) == 10
    assert any("sample toy/train/s0004 field text: member toy/train/s0004.text.txt is not in the tar" in p
               for p in verify_split(small))


# --- DVC-04, KEY-02: what DVC's mtime cache and the writer's key set cannot see ---


def test_dvc_04_a_bit_flip_with_the_mtime_restored_is_found_by_verify(small):
    """DVC-04: a flipped byte with size and mtime restored (what DVC's state cache trusts, so ``dvc status``
    reports nothing) is found by ``verify`` and ``load(verify=True)``, which re-hash every shard."""
    shard = sorted(small.glob("*.tar"))[0]
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x04
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = shard.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert _flagged(small, shard)
    with pytest.raises(ShardIntegrityError, match=shard.name):
        mmdata.load(small, verify=True)


def test_key_02_the_same_key_in_two_shards_is_flagged_by_verify(small):
    """KEY-02 (read side): an index naming one key in both shards (the writer's key set makes this impossible,
    so only an edit or a foreign writer can) is flagged by ``verify`` (the shard's keys differ from the
    index's), and reading the row fails on the member's header, naming the key it expected."""
    path = small / INDEX
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    first = columns["key"][0]
    columns["key"][5] = columns["sample"][5] = first  # row 5 is the first sample of the second shard
    pq.write_table(pa.table({n: pa.array(v, type=table.schema.field(n).type) for n, v in columns.items()}), path)
    assert any("toy-train-000001.tar: 5 samples in the tar" in p and "key order differs" in p
               for p in verify_split(small))
    with pytest.raises(ShardIntegrityError, match=f"expected b'{first}"):
        _read(small)
