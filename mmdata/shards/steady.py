"""The steady-state batch read: every member already verified in this process, read with little Python per member.

Once a member's tar header and crc32 passed (:mod:`mmdata.shards.verified`), a later read of it needs only its
payload bytes, the npy header of a fixed-shape field (compared with the layout's, so another valid npy header is
never misread) and a read that does not end early. Here each sample's run of stored neighbours is read with one
call. A run holding a fixed-shape npy field is read with ``preadv`` into, member after member: the bytes before
its npy header (tar header, padding) and the header itself into row ``j`` of a per-field head array (the bytes
before it into a discarded scratch when they vary in length), its data into row ``j`` of the batch array
(:mod:`mmdata.shards.direct`), and any other member's payload into a per-batch buffer. A run without one is read
with one ``pread`` and its payloads sliced from it. The npy headers are compared with one numpy comparison per
field, and the buffer lists are built a column at a time.

Anything else (a member not yet verified, a member of another size than its layout, a differing npy header) is
left to the general path (:meth:`mmdata.shards.members.MemberReader._payloads`), which checks and records it.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from mmdata.errors import CodecError, ShardIntegrityError
from mmdata.shards import direct, verified
from mmdata.shards.collate import Empty
from mmdata.shards.verified import ShardState
from mmdata.types import Features

BLOCK = direct.BLOCK


class MemberReader(Protocol):
    """What the steady read uses of :class:`mmdata.shards.members.MemberReader` (which calls it; named here
    without importing it, so the two modules form no cycle)."""

    names: list[str]  # the requested fields' members, in stored order
    runs: list[list[str]]  # those members in runs of stored neighbours
    layouts: dict[str, direct.Layout]  # the fixed-shape npy fields among them
    code: np.ndarray  # shard code per index row
    offset: dict[str, np.ndarray]  # payload offset per index row, per field
    size: dict[str, np.ndarray]  # payload size per index row, per field
    stored: Features
    decode: dict[str, Callable[[memoryview], Any]]

    def _fd(self, code: int) -> int: ...

    def _fail(self, row: int, name: str, problem: str) -> ShardIntegrityError: ...


def _eligible(reader: MemberReader, units: np.ndarray, codes: np.ndarray, states: dict[int, ShardState]) -> bool:
    """Every requested member of ``units`` verified in this process, npy members of their layout's size."""
    for name, lay in reader.layouts.items():
        if not (reader.size[name][units] == len(lay.prefix) + lay.nbytes).all():
            return False
    offsets = np.concatenate([reader.offset[name][units] for name in reader.names])
    shards = np.tile(codes, len(reader.names))
    return all(states[code].verified.issuperset(offsets[shards == code].tolist()) for code in states)


def read_values(reader: MemberReader, units: np.ndarray, shared: np.ndarray, slots: np.ndarray,
                states: dict[int, ShardState], columns: dict[str, tuple[np.ndarray, list[np.ndarray]]],
                empty: Empty) -> list[dict[str, Any]] | None:
    """The decoded members of ``units`` (one dict per unit, as ``MemberReader._values``), or None when the batch
    is not in the steady state (then nothing is put in ``columns``).

    Args:
        units: index rows ``[n]``, one per stored sample; shared: bool ``[n]``, the unit is in several rows of
            the batch (its decoded values are made read-only); slots: the batch row of each unit's arrays ``[n]``.
        states: the record of each shard code of ``units``.
        columns: receives ``name -> (batch array, read-only rows)`` for the fixed-shape npy fields.
        empty: allocates the batch arrays.

    Raises:
        ShardIntegrityError: a shard ends early, or a member's bytes do not decode.
    """
    codes = reader.code[units]
    if not _eligible(reader, units, codes, states):
        return None
    n, slot_list = len(units), slots.tolist()
    arrays = {name: empty((n, *lay.shape), lay.dtype) for name, lay in reader.layouts.items()}
    rows = {name: direct.rows_of(array) for name, array in arrays.items()}  # (read destinations, what samples hold)
    mixed = [run for run in reader.runs if any(name in arrays for name in run)]
    payloads = _scratch(reader, units, [name for run in mixed for name in run if name not in arrays])
    heads: list[tuple[np.ndarray, bytes]] = []  # per npy field: its head array and the npy header it must hold
    fds = {code: reader._fd(code) for code in states}
    unit_fds = [fds[code] for code in codes.tolist()]
    for run in reader.runs:
        start = reader.offset[run[0]][units] - BLOCK  # the run's first tar header
        if run not in mixed:  # nothing goes to a batch array: one pread of the range, the payloads sliced from it
            payloads.update(_read_whole(reader, units, run, unit_fds, start))
            continue
        buffers, end = [], start
        for name in run:
            offset = reader.offset[name][units]
            gap = offset - end
            if name in arrays:
                prefix = reader.layouts[name].prefix
                even = int(gap[0]) if (gap == gap[0]).all() else 0  # fixed-size members before: one skip for all
                head = np.empty((n, even + len(prefix)), np.uint8)
                heads.append((head[:, even:], prefix))
                buffers += ([] if even else [_skips(gap)]) + [list(head), [rows[name][0][slot] for slot in slot_list]]
            else:
                buffers += (_skips(gap), payloads[name])
            end = offset + reader.size[name][units]
        _read(reader, units, run[0], unit_fds, buffers, start.tolist(), (end - start).tolist())
    for head, prefix in heads:
        if (head != np.frombuffer(prefix, np.uint8)).any():
            return None  # another valid npy header (e.g. Fortran order): the general path parses it
    per_field = []  # each field's value per unit
    for name in reader.names:
        if name in arrays:
            frozen = rows[name][1]
            columns[name] = (arrays[name], frozen)
            per_field.append([frozen[slot] for slot in slot_list])
        else:
            per_field.append(_decoded(reader, units, name, payloads[name], shared))
    return [dict(zip(reader.names, unit)) for unit in zip(*per_field)]


def _scratch(reader: MemberReader, units: np.ndarray, names: list[str]) -> dict[str, list[memoryview]]:
    """Per field of ``names``, each unit's payload as a slice of one writable buffer for the batch."""
    sizes = {name: reader.size[name][units].tolist() for name in names}
    scratch = memoryview(bytearray(sum(sum(column) for column in sizes.values())))
    out, at = {}, 0
    for name in names:
        out[name] = []
        for size in sizes[name]:
            out[name].append(scratch[at:at + size])
            at += size
    return out


def _skips(gap: np.ndarray) -> list[memoryview]:
    """A discarded buffer of ``gap[i]`` bytes per unit (slices of one buffer: gaps are read, never looked at)."""
    junk = memoryview(bytearray(int(gap.max())))
    slices: dict[int, memoryview] = {}
    return [slices.get(g) or slices.setdefault(g, junk[:g]) for g in gap.tolist()]


def _read(reader: MemberReader, units: np.ndarray, first: str, fds: list[int], buffers: list[list[Any]],
          starts: list[int], lengths: list[int]) -> None:
    """One ``preadv`` per unit into its buffers (``buffers``: one list per member part, a buffer per unit)."""
    for i, (fd, iov, start, length) in enumerate(zip(fds, zip(*buffers), starts, lengths)):
        if os.preadv(fd, iov, start) < length:
            raise reader._fail(int(units[i]), first, "shard ends early (truncated)")


def _read_whole(reader: MemberReader, units: np.ndarray, run: list[str], fds: list[int], start: np.ndarray
                ) -> dict[str, list[memoryview]]:
    """Per field of ``run``, each unit's payload, sliced from one ``pread`` of the unit's range (from ``start``)."""
    end = reader.offset[run[-1]][units] + reader.size[run[-1]][units]
    blocks = []
    for i, (fd, at, length) in enumerate(zip(fds, start.tolist(), (end - start).tolist())):
        block = os.pread(fd, length, at)
        if len(block) < length:
            raise reader._fail(int(units[i]), run[0], "shard ends early (truncated)")
        blocks.append(memoryview(block))
    out = {}
    for name in run:
        relative, sizes = (reader.offset[name][units] - start).tolist(), reader.size[name][units].tolist()
        out[name] = [block[r:r + size] for block, r, size in zip(blocks, relative, sizes)]
    return out


def _decoded(reader: MemberReader, units: np.ndarray, name: str, spans: list[memoryview], shared: np.ndarray
             ) -> list[Any]:
    """Field ``name``'s payloads decoded; those of shared units made read-only. npy decodes from read-only
    views: arrays decoded from a member's bytes are read-only views, as in the general path."""
    decode = reader.decode[name]
    if reader.stored[name].codec == "npy":
        spans = [span.toreadonly() for span in spans]
    try:
        values = [decode(span) for span in spans]
    except CodecError:
        for i, span in enumerate(spans):  # find the member that failed, for the message
            try:
                decode(span)
            except CodecError as exc:
                raise reader._fail(int(units[i]), name, str(exc)) from exc
        raise
    for i in np.flatnonzero(shared).tolist():
        verified.read_only(values[i])
    return values
