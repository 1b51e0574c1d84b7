"""Tar-level primitives: the deterministic shard sink, key listing, and checked random member access.

The writer stores each sample's members consecutively in sorted field order with fixed metadata and names of at
most :data:`MAX_MEMBER_NAME` bytes (so no GNU long-name records sit between members); the reader relies on that
layout to fetch adjacent requested members with one ``pread``.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import CodecError, ShardIntegrityError
from mmdata.shards.codec import decode
from mmdata.types import Features, Sample, View

#: Longest tar member name: the ustar name field. Longer names would need GNU long-name records between
#: members, which would break the reader's one-``pread``-per-run layout assumption.
MAX_MEMBER_NAME = 100


class _HashingFile:
    """A write-only file that feeds every byte to sha256 (so no second pass is needed to hash a shard)."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "wb")
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.handle.tell()

    def close(self) -> None:
        """Flush and fsync before closing: the rename that follows must not publish unwritten bytes."""
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()


@dataclass
class _Shard:
    """One shard being written: its tar stream and the keys it holds."""

    path: Path
    file: _HashingFile
    tar: tarfile.TarFile
    keys: list[str] = field(default_factory=list)


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    # Fixed metadata (mtime 0, root owner, no names) makes the bytes depend on content only, and an
    # integer mtime keeps tarfile from adding a PAX header per member (design 5b).
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardSink:
    """Writes samples as tar members into numbered shards, rotating at ``max_samples`` or ``max_bytes``."""

    def __init__(self, directory: Path, prefix: str, max_samples: int, max_bytes: int) -> None:
        if max_samples < 1 or max_bytes < 1:
            raise ValueError("max_samples and max_bytes must be positive")
        self.directory, self.prefix = directory, prefix
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.current: _Shard | None = None
        self.done: list[dict[str, Any]] = []

    def _open(self) -> _Shard:
        path = self.directory / f"{self.prefix}-{len(self.done):06d}.tar"
        handle = _HashingFile(path.with_name(path.name + ".partial"))
        tar = tarfile.TarFile(fileobj=handle, mode="w", format=tarfile.GNU_FORMAT)
        return _Shard(path, handle, tar)

    def add(self, key: str, members: list[tuple[str, bytes]]) -> tuple[str, list[int]]:
        """Append one sample's members (consecutive, in the given order); return (shard name, data offsets)."""
        size = sum(len(data) + 1024 for _, data in members)
        shard = self.current
        if shard is not None and shard.keys and (
                len(shard.keys) >= self.max_samples or shard.tar.offset + size > self.max_bytes):
            self._finish()
            shard = None
        if shard is None:
            shard = self.current = self._open()
        offsets = []
        for name, data in members:
            shard.tar.addfile(_member_info(name, len(data)), io.BytesIO(data))
            padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            offsets.append(shard.tar.offset - padded)
        shard.keys.append(key)
        return shard.path.name, offsets

    def _finish(self) -> None:
        shard = self.current
        shard.tar.close()
        shard.file.close()  # still ``current`` here, so a disk-full error names this file
        self.current = None
        os.replace(shard.path.with_name(shard.path.name + ".partial"), shard.path)
        self.done.append({"name": shard.path.name, "samples": len(shard.keys), "bytes": shard.path.stat().st_size,
                          "sha256": shard.file.digest.hexdigest(), "first_key": shard.keys[0],
                          "last_key": shard.keys[-1], "keys": shard.keys})

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, *exc: object) -> None:
        """On an error, close the open shard's file without publishing it (no descriptor outlives the run)."""
        if self.current is not None and exc[0] is not None:
            try:
                self.current.file.handle.close()
            except OSError:  # closing after ENOSPC may fail again; the file is removed with the temp folder
                pass
            self.current = None

    def writing(self) -> Path | None:
        """The file being written now (a ``.partial`` shard), or None between shards: named on disk-full."""
        return None if self.current is None else self.current.path.with_name(self.current.path.name + ".partial")

    def close(self) -> list[dict[str, Any]]:
        """Finish the open shard; return per-shard records (name, samples, bytes, sha256, keys)."""
        if self.current is not None:
            self._finish()
        return self.done


def shard_keys(path: Path) -> list[str]:
    """Sample keys of a tar shard in order, read back with tarfile (the reconciliation's independent view)."""
    keys: list[str] = []
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            key = member.name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
    return keys


def _header_problem(header: memoryview, member: bytes, size: int) -> str | None:
    """What is wrong with a member's 512-byte ustar/GNU header, or None when name, size and checksum agree.

    A plain-Python check (3 us) instead of ``tarfile.TarInfo.frombuf`` (16 us, most of the read time).
    """
    if bytes(header[:100]).rstrip(b"\0") != member:
        return f"header names {bytes(header[:100]).rstrip(bytes(1))!r}, expected {member!r}"
    try:
        stored_size = int(bytes(header[124:136]).strip(b"\0 ") or b"0", 8)
        stored_sum = int(bytes(header[148:156]).strip(b"\0 ") or b"0", 8)
    except ValueError:
        return "unparsable size or checksum field"
    # The checksum counts its own 8-byte field as spaces (POSIX ustar).
    computed = int(np.frombuffer(header, np.uint8).sum()) - sum(header[148:156]) + 8 * 32
    if stored_sum != computed:
        return f"header checksum {stored_sum} != computed {computed}"
    if stored_size != size:
        return f"header says {stored_size} bytes, index says {size}"
    return None


def _columns(index: Mapping[str, np.ndarray], fields: Sequence[str], view: View | None) -> dict[str, list]:
    """The index columns a reader of ``fields`` needs, as Python lists (scalar lookups 5x faster than numpy)."""
    names = ["key", "sample", "shard", "label"] + [f"{c}_{f}" for f in fields for c in ("offset", "size", "crc32")]
    if view is not None:
        names.append(view.param)
    return {name: index[name].tolist() for name in names}


class MemberReader:
    """Random access to sample fields by index row; one file descriptor per shard, opened lazily.

    The writer stores a sample's members consecutively in sorted field order, so requested fields that are
    neighbours in that order are fetched with one ``pread`` (header of the first to payload end of the last).
    """

    def __init__(self, directory: str | Path, stored: Features, index: Mapping[str, np.ndarray],
                 fields: Sequence[str], *, view: View | None = None, label: str = "label") -> None:
        """Plan the reads of ``fields``; no file is opened yet.

        Args:
            directory: the split directory holding the shards.
            stored: the schema of the tar members (the manifest's features).
            index: the split's index columns (:func:`mmdata.shards.index.read_index`), ``[rows]`` each.
            fields: the fields to decode per row.
            view: the split's View, or None (see :class:`mmdata.types.View`).
            label: the label field's name; under a View its value comes from the index row.
        """
        self.directory, self.stored, self.fields = Path(directory), stored, tuple(fields)
        self.view, self.label = view, label
        # Under a View the label comes from the index row, so its member is never read.
        names = [n for n in self.fields if not (view and n == label)]
        order = sorted(stored)
        positions = sorted(order.index(name) for name in names)
        self.runs: list[list[str]] = []
        for pos in positions:
            if self.runs and order.index(self.runs[-1][-1]) == pos - 1:
                self.runs[-1].append(order[pos])
            else:
                self.runs.append([order[pos]])
        self.cols = _columns(index, names, view)
        self.members = {n: f".{n}.{stored[n].codec}" for n in names}
        self.fds: dict[str, int] = {}

    def _fd(self, shard: str) -> int:
        if shard not in self.fds:
            self.fds[shard] = os.open(self.directory / shard, os.O_RDONLY)
        return self.fds[shard]

    def _fail(self, row: int, name: str, problem: str) -> ShardIntegrityError:
        shard, key = self.cols["shard"][row], self.cols["key"][row]
        return ShardIntegrityError(f"{self.directory / shard}: sample {key} field {name}: {problem}")

    def _run(self, row: int, run: list[str], sample: Sample) -> None:
        cols, block_size = self.cols, tarfile.BLOCKSIZE
        start = cols[f"offset_{run[0]}"][row] - block_size
        end = cols[f"offset_{run[-1]}"][row] + cols[f"size_{run[-1]}"][row]
        block = memoryview(os.pread(self._fd(cols["shard"][row]), end - start, start))
        if len(block) != end - start:
            raise self._fail(row, run[0], "shard ends early (truncated)")
        for name in run:
            offset, size = cols[f"offset_{name}"][row] - start, cols[f"size_{name}"][row]
            member = (cols["sample"][row] + self.members[name]).encode()
            # The header before each payload is checked too: it catches flipped header bits and offsets
            # that point at the wrong member.
            problem = _header_problem(block[offset - block_size:offset], member, size)
            payload = block[offset:offset + size]
            if problem is None and zlib.crc32(payload) != cols[f"crc32_{name}"][row]:
                problem = "payload checksum mismatch (corrupted)"
            if problem is not None:
                raise self._fail(row, name, problem)
            try:
                sample[name] = decode(payload, self.stored[name])
            except CodecError as exc:
                raise self._fail(row, name, str(exc)) from exc

    def read(self, row: int) -> Sample:
        """Decode the requested fields of one index row into a sample dict."""
        sample: Sample = {"__key__": self.cols["key"][row]}
        for run in self.runs:
            self._run(row, run, sample)
        if self.view is None:
            return sample
        sample = self.view.apply(sample, self.cols[self.view.param][row])
        if self.label in self.fields:
            sample[self.label] = self.cols["label"][row]
        return sample

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
