"""Per-process records of the member reader: members already verified, and decoded members several rows share.

Verified once per shard version: a member whose tar header and payload crc32 passed is not re-hashed by later
reads in the same process while its shard's ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` is
unchanged (one ``fstat`` per shard per batch). Any write to the file, a ``utime`` or a replacement changes that
key, and the record of the shard is dropped, so corruption introduced between epochs is caught on the next
read. Time stamps have a coarse tick, so a write in the same tick as the check could keep the key: as git does
for its index ("racy" entries), nothing is recorded for a shard changed less than :data:`SETTLE_NS` before the
check; such a shard is verified on every read until it settles.

Decoded members of View splits (one stored image with several hypotheses, one stored series cut into many
windows) sit in a small LRU bounded by :data:`DECODED_BUDGET` bytes under the same key, as read-only arrays.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A shard changed less than this before a check is not recorded as verified (time stamp granularity).
SETTLE_NS = 2_000_000_000
#: Bytes of decoded View members kept per process (the LRU drops the least recently used beyond it).
DECODED_BUDGET = 64 << 20
BLOCK = 512


@dataclass
class ShardState:
    """What one process knows about one version of a shard."""

    key: tuple[int, ...]
    settled: bool
    verified: set[int] = field(default_factory=set)  # payload offsets whose header and crc32 passed


_STATES: dict[str, ShardState] = {}
_DECODED: OrderedDict[tuple, tuple[dict[str, Any], int]] = OrderedDict()
_DECODED_BYTES = [0]


def stat_key(st: os.stat_result) -> tuple[int, ...]:
    """What identifies a file version: ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def shard_state(path: str, fd: int) -> ShardState:
    """The record of the shard open as ``fd``; a new, empty one when the file changed since the last call."""
    st = os.fstat(fd)
    key = stat_key(st)
    state = _STATES.get(path)
    if state is None or state.key != key:
        state = _STATES[path] = ShardState(key, False)
    if not state.settled:
        state.settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLE_NS
    return state


def forget() -> None:
    """Drop every record and cached decode of this process (as a fresh process starts)."""
    _STATES.clear()
    _DECODED.clear()
    _DECODED_BYTES[0] = 0


def cached(key: tuple) -> dict[str, Any] | None:
    """Decoded members stored under ``key`` (shard path, shard key, payload offset), or None."""
    hit = _DECODED.get(key)
    if hit is None:
        return None
    _DECODED.move_to_end(key)
    return hit[0]


def remember(key: tuple, values: dict[str, Any]) -> None:
    """Keep ``values`` (already read-only) under ``key``, dropping the least recently used beyond the budget."""
    size = sum(v.nbytes if isinstance(v, np.ndarray) else 64 for v in values.values())
    if size > DECODED_BUDGET:
        return
    _DECODED[key] = (values, size)
    _DECODED_BYTES[0] += size
    while _DECODED_BYTES[0] > DECODED_BUDGET:
        _, (_, dropped) = _DECODED.popitem(last=False)
        _DECODED_BYTES[0] -= dropped


def read_only(value: Any) -> Any:
    """``value`` with numpy arrays made read-only: an in-place augment then fails instead of altering other rows."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    return value


def header_suspects(headers: np.ndarray, names: list[bytes], sizes: np.ndarray) -> np.ndarray:
    """Which of ``n`` tar headers fail the writer's exact layout (name, 11-digit size, 6-digit checksum).

    A vectorised check of what :func:`header_problem` checks one header at a time; a
    flagged header is then checked by that function, which also accepts other valid ustar spellings.

    Args:
        headers: uint8 ``[n, 512]``.
        names: the expected member names, ``n`` bytes strings.
        sizes: int64 ``[n]`` payload sizes from the index.

    Returns:
        bool ``[n]``, True where the header needs the slow check.
    """
    n = len(names)
    expected = np.array(names, dtype="S101").view(np.uint8).reshape(n, 101)
    bad = (expected[:, 100] != 0) | (headers[:, :100] != expected[:, :100]).any(1)
    size_digits = headers[:, 124:135].astype(np.int64) - 48
    bad |= ((size_digits < 0) | (size_digits > 7)).any(1) | (headers[:, 135] != 0)
    bad |= size_digits @ (8 ** np.arange(10, -1, -1)) != sizes
    stored, computed, octal = header_checksums(headers)
    return bad | ~octal | (stored != computed)


def header_checksums(headers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored and computed checksums of ``n`` tar headers at once (the reader's and the writer's checks).

    Args:
        headers: uint8 ``[n, 512]``.

    Returns:
        int64 ``[n]`` stored (the first 6 bytes of the checksum field read as octal digits, as this writer and
        tarfile write it: ``%06o\0 ``), int64 ``[n]`` computed, and bool ``[n]`` whether those 6 bytes are octal
        digits (where not, ``stored`` is meaningless and the header needs the one-by-one parse).
    """
    digits = headers[:, 148:154].astype(np.int64) - ord("0")
    octal = ((digits >= 0) & (digits <= 7)).all(1)
    # The checksum counts its own 8-byte field as spaces (POSIX ustar).
    computed = headers.sum(1, dtype=np.int64) - headers[:, 148:156].sum(1, dtype=np.int64) + 8 * 32
    return digits @ (8 ** np.arange(5, -1, -1)), computed, octal


def header_problem(header: memoryview, member: bytes, size: int) -> str | None:
    """What is wrong with a member's 512-byte ustar/GNU header, or None when name, size and checksum agree."""
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
