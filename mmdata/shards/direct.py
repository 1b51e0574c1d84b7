"""Byte ranges of shards read with ``preadv``: fixed-shape npy data straight into the batch array.

A fixed-shape npy field's members all hold ``np.save``'s header for the field's dtype and shape followed by
the same number of data bytes, so where a member's data lies in the shard is known from the index alone. The
reader hands ``preadv`` the row of the batch array as the destination of those bytes: one copy (page cache ->
batch) instead of a copy into a read buffer and another when the batch is stacked. Everything else of a range
(tar headers, npy headers, other members, padding and holes read through) lands in a scratch buffer, so the
checks see the same bytes as before: the tar header, the npy header (compared with the expected one) and the
crc32 from the index, chained over the npy header and the data in the row.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmdata.shards.codec import _npy_prefix
from mmdata.types import Field

BLOCK = 512
#: Holes up to this many bytes between wanted ranges are read through: a ``pread`` call costs about what
#: copying 16 KiB does.
GAP = 16 << 10
#: Buffers per ``preadv`` call (the kernel's limit is at least 1024 on Linux).
IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024

#: A cut: the ``length`` bytes at shard offset ``start`` go to ``dest`` (a C-contiguous writable array) instead
#: of the range's scratch buffer.
Cut = tuple[int, int, np.ndarray]


@dataclass(frozen=True)
class Layout:
    """A fixed-shape npy field's members: the ``prefix`` np.save writes (magic + header), then ``nbytes`` data."""

    dtype: np.dtype
    shape: tuple[int, ...]
    prefix: bytes
    nbytes: int


def layout(field: Field) -> Layout | None:
    """The layout of a fixed-shape numeric npy field's members, or None (not npy, variable or empty shape)."""
    if field.codec != "npy" or not field.shape or None in field.shape:
        return None
    dtype, shape = np.dtype(field.dtype), tuple(int(d) for d in field.shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if dtype.kind not in "biufc" or nbytes == 0:
        return None
    return Layout(dtype, shape, _npy_prefix(dtype, shape), nbytes)


def rows_of(array: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The rows of ``array`` ``[n, ...]`` (writable, C order): as writable views (read destinations) and as
    read-only views (what samples hold: an in-place augment then fails as on any other decoded npy member)."""
    frozen = array.view()
    frozen.flags.writeable = False
    return list(array), list(frozen)


def fetch(fd: Callable[[int], int], codes: np.ndarray, starts: np.ndarray, ends: np.ndarray,
          cuts: list[list[Cut]], truncated: Callable[[int], Exception]) -> list[memoryview]:
    """The bytes ``[starts[k], ends[k])`` of shard ``codes[k]`` for every k, less the cuts read into their rows.

    Neighbouring ranges (holes up to :data:`GAP`) are read with one call.

    Args:
        fd: the file descriptor of a shard code.
        codes, starts, ends: int64 ``[k]`` shard codes and byte ranges.
        cuts: per range, its cuts in shard order (each inside the range).
        truncated: the error to raise when range ``k`` reads short.

    Returns:
        per range, its bytes with the cut bytes left out (a cut's bytes are in its ``dest``).
    """
    order = np.lexsort((starts, codes))
    s, e, c = starts[order], ends[order], codes[order]
    new = np.ones(len(s), bool)
    new[1:] = (c[1:] != c[:-1]) | (s[1:] > -(-e[:-1] // BLOCK) * BLOCK + GAP)
    heads = np.flatnonzero(new).tolist() + [len(s)]
    out: list[memoryview] = [None] * len(s)  # type: ignore[list-item]
    order_l, c_l, starts_l, ends_l = order.tolist(), c.tolist(), starts.tolist(), ends.tolist()
    fds = {code: fd(code) for code in set(c_l)}
    for h0, h1 in zip(heads, heads[1:]):
        if h1 - h0 == 1:  # the common case under shuffling: a range alone, with the least Python per range
            k = order_l[h0]
            _alone(fds[c_l[h0]], k, starts_l[k], ends_l[k], cuts[k], out, truncated)
            continue
        ks = order_l[h0:h1]
        _group(fds[c_l[h0]], ks, starts_l, ends_l, max(ends_l[k] for k in ks), cuts, out, truncated)
    return out


def _alone(fd: int, k: int, lo: int, hi: int, cut: list[Cut], out: list[memoryview],
           truncated: Callable[[int], Exception]) -> None:
    """Read range ``k``, ``[lo, hi)``, with one ``pread``, or ``preadv`` into a scratch buffer and its cuts' rows."""
    if not cut:
        out[k] = block = memoryview(os.pread(fd, hi - lo, lo))
        if len(block) < hi - lo:
            raise truncated(k)
        return
    scratch = memoryview(bytearray(hi - lo - sum([n for _, n, _ in cut])))
    iov, pos, sp = [], lo, 0
    for where, n, dest in cut:
        iov.append(scratch[sp:sp + where - pos])  # a range starts with a tar header: never empty
        iov.append(dest)
        sp, pos = sp + where - pos, where + n
    if hi > pos:
        iov.append(scratch[sp:])
    if (os.preadv(fd, iov, lo) if len(iov) <= IOV_MAX else _chunked(fd, iov, lo)) < hi - lo:
        raise truncated(k)
    out[k] = scratch.toreadonly()  # as pread's bytes: arrays decoded from a member's bytes are read-only views


def _group(fd: int, ks: list[int], starts: list[int], ends: list[int], hi: int, cuts: list[list[Cut]],
           out: list[memoryview], truncated: Callable[[int], Exception]) -> None:
    """Read the neighbouring ranges ``ks`` (in shard order, up to ``hi``) with one ``pread``, or ``preadv`` into
    a scratch buffer and the cuts' rows when there are cuts."""
    lo = starts[ks[0]]
    cut = [sum([n for _, n, _ in cuts[k]]) for k in ks]
    if not any(cut):
        block = memoryview(os.pread(fd, hi - lo, lo))
        _check(lo + len(block), ks, ends, truncated)
        for k in ks:
            out[k] = block[starts[k] - lo:ends[k] - lo]
        return
    scratch = memoryview(bytearray(hi - lo - sum(cut)))
    iov, pos, sp = [], lo, 0  # pos: the shard offset reached; sp: the scratch bytes used
    for k, n_cut in zip(ks, cut):
        at = sp + starts[k] - pos
        for where, n, dest in cuts[k]:
            if where > pos:
                iov.append(scratch[sp:sp + where - pos])
                sp += where - pos
            iov.append(dest)
            pos = where + n
        out[k] = scratch[at:at + ends[k] - starts[k] - n_cut].toreadonly()  # as pread's bytes (see _alone)
    if hi > pos:
        iov.append(scratch[sp:sp + hi - pos])
    if len(iov) <= IOV_MAX:
        got = os.preadv(fd, iov, lo)
    else:
        got = _chunked(fd, iov, lo)
    _check(lo + got, ks, ends, truncated)


def _chunked(fd: int, iov: list[memoryview], offset: int) -> int:
    """``preadv`` of more than :data:`IOV_MAX` buffers, in calls of at most that many; the bytes read."""
    got = 0
    for i in range(0, len(iov), IOV_MAX):
        chunk = iov[i:i + IOV_MAX]
        read = os.preadv(fd, chunk, offset + got)
        got += read
        if read < sum(memoryview(v).nbytes for v in chunk):
            break
    return got


def _check(reached: int, ks: list[int], ends: list[int], truncated: Callable[[int], Exception]) -> None:
    """Raise ``truncated(k)`` for the first range ``k`` that ends past the shard offset ``reached``."""
    for k in ks:
        if ends[k] > reached:
            raise truncated(k)


class Rows(list):
    """The samples of one ``MemberReader.read_batch`` call, with the batch arrays their npy rows are views of.

    ``columns[name] = (array, rows)``: ``array`` ``[B, *shape]`` (writable) and ``rows[j]``, the read-only view
    of ``array[j]`` that sample ``j`` holds. :func:`mmdata.shards.collate.collate` takes ``array`` as the
    batch (no second copy) when every sample still holds its row, and only once.
    """

    columns: dict[str, tuple[np.ndarray, list[np.ndarray]]]

    def __init__(self, samples: list, columns: dict[str, tuple[np.ndarray, list[np.ndarray]]] | None = None) -> None:
        super().__init__(samples)
        self.columns = columns or {}
