"""Tar-level primitives: the deterministic shard sink, key listing; the checked member reader is
:mod:`mmdata.shards.members` (re-exported here).

The writer stores each sample's members consecutively in sorted field order with fixed metadata and names of at
most :data:`MAX_MEMBER_NAME` bytes (so no GNU long-name records sit between members); the reader relies on that
layout to fetch adjacent requested members with one ``pread``.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# The checked member reader lives in mmdata.shards.members; imported here for the modules that import it from tar.
from mmdata.shards.members import MemberReader  # noqa: E402,F401
