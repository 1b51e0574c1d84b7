"""Checked random access to tar members by index row, a batch at a time (the reader behind ``mmdata.load``).

The writer stores each sample's members consecutively in sorted field order, each behind its 512-byte header
(:mod:`mmdata.shards.tar`). Per batch the reader gathers the byte ranges of the requested members with numpy
over the index columns, sorts them by shard and offset, and reads neighbouring ranges (holes up to :data:`GAP`
bytes included) with one ``pread``; fixed-shape npy data goes straight into the batch array with ``preadv``
(:mod:`mmdata.shards.direct`; one copy, the ceiling's). ``pread`` and not ``mmap``: a shard truncated after
open then reads short, which is reported, where ``mmap`` would kill the process with SIGBUS.

Integrity: every member's tar header (name, size, checksum; vectorised over the batch) and the payload's crc32
from the index are checked before it is decoded; a failure raises :class:`ShardIntegrityError` naming shard,
sample key and field. A member that passed is not re-hashed in the same process while its shard's stat is
unchanged (:mod:`mmdata.shards.verified`): the crc32 (:mod:`mmdata.shards.crc`) then no longer bounds the read.

Shared decodes: rows of one stored sample (a View's picks or windows) in a batch decode it once; under a View
the decoded members also stay in a small per-process LRU, so a stock split costs O(days + windows), and shared
arrays are read-only so an in-place change cannot leak into other rows.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import CodecError, ShardIntegrityError
from mmdata.shards import direct, steady, verified
from mmdata.shards.codec import decode_npy_batch, decoder
from mmdata.shards.collate import Empty
from mmdata.shards.crc import crc32
from mmdata.shards.direct import Rows
from mmdata.types import Features, Sample, View

BLOCK = verified.BLOCK
GAP = direct.GAP  # holes up to this many bytes are read through
#: Headers are checked with numpy from this many unverified members of a field on (fewer: one at a time).
VECTOR_FROM = 16
#: Fixed-shape npy members up to this size are decoded a batch at a time (one join copy saves two array objects
#: per member); larger ones are mapped where they lie (the copy would cost more than the objects).
BATCH_DECODE_MAX = 16 << 10


def _runs(names: Sequence[str], order: list[str]) -> list[list[str]]:
    """``names`` grouped into runs of neighbours in the stored member order (each run is one byte range)."""
    runs: list[list[str]] = []
    for pos in sorted(order.index(n) for n in names):
        if runs and order.index(runs[-1][-1]) == pos - 1:
            runs[-1].append(order[pos])
        else:
            runs.append([order[pos]])
    return runs


class MemberReader:
    """Random access to sample fields by index row; one file descriptor per shard, opened lazily."""

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
        self.names = [n for n in sorted(stored) if n in self.fields and not (view and n == label)]
        self.runs = _runs(self.names, sorted(stored))
        shards, code = np.unique(np.asarray(index["shard"]), return_inverse=True)
        self.shard_names, self.code = [str(s) for s in shards], code.astype(np.int64).reshape(-1)
        self.paths = [str(self.directory / s) for s in self.shard_names]  # built once: pathlib costs ~5 us a join
        self.keys, self.samples = np.asarray(index["key"], object), np.asarray(index["sample"], object)
        self.labels = index["label"]
        self.param = np.asarray(index[view.param], np.int64) if view else None
        self.offset = {n: np.asarray(index[f"offset_{n}"], np.int64) for n in self.names}
        self.size = {n: np.asarray(index[f"size_{n}"], np.int64) for n in self.names}
        self.crc = {n: np.asarray(index[f"crc32_{n}"], np.int64) for n in self.names}
        self.suffix = {n: f".{n}.{stored[n].codec}" for n in self.names}
        self.decode = {n: decoder(stored[n]) for n in self.names}
        # Arrays of one shape per field (ndim >= 1: a 0-d value stays an array, not a numpy scalar row).
        # Fixed-shape npy fields read straight into the batch array (not under a View: its cuts make new arrays).
        self.layouts = {n: lay for n in self.names if view is None and (lay := direct.layout(stored[n])) is not None}
        self.batched = {n: stored[n].codec == "npy" and len(stored[n].shape) > 0 and None not in stored[n].shape
                        for n in self.names}
        self.fds: dict[int, int] = {}

    def _fd(self, code: int) -> int:
        if code not in self.fds:
            self.fds[code] = os.open(self.directory / self.shard_names[code], os.O_RDONLY)
        return self.fds[code]

    def _fail(self, row: int, name: str, problem: str) -> ShardIntegrityError:
        shard, key = self.shard_names[self.code[row]], self.keys[row]
        return ShardIntegrityError(f"{self.directory / shard}: sample {key} field {name}: {problem}")

    def read(self, row: int) -> Sample:
        """Decode the requested fields of one index row into a sample dict."""
        return self.read_batch([row])[0]

    def read_batch(self, rows: Sequence[int] | np.ndarray, empty: Empty = np.empty) -> list[Sample]:
        """Samples of index rows ``rows`` (the same as ``[read(r) for r in rows]``), shared members decoded once.

        ``empty(shape, dtype)`` allocates the batch arrays that fixed-shape npy fields are read into (a worker
        passes its slot's arena, so collate hands them on where the main process views them: no copy).

        Raises:
            ShardIntegrityError: a member's header or crc32 does not match, its shard ends early, or its bytes do
                not decode (the message names shard, sample key and field).
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not self.names or not len(rows):
            return Rows(self._samples(rows, np.zeros(len(rows), np.int64), [{}]))
        unit = self.code[rows] << 44 | self.offset[self.names[0]][rows]  # offsets < 16 TiB
        _, first, inverse = np.unique(unit, return_index=True, return_inverse=True)
        shared = np.bincount(inverse.reshape(-1)) > 1
        columns: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
        slots = np.arange(len(first)) if shared.any() else first
        # With shared rows the batch arrays are not handed on: keep them out of the caller's (bounded) arena.
        values = self._values(rows[first], shared, slots, columns, np.empty if shared.any() else empty)
        # Batch arrays are handed on only when each sample holds its own row (no padded repeats).
        return Rows(self._samples(rows, inverse.reshape(-1), values), None if shared.any() else columns)

    def _samples(self, rows: np.ndarray, inverse: np.ndarray, values: list[dict[str, Any]]) -> list[Sample]:
        keys, units = self.keys[rows].tolist(), inverse.tolist()
        if self.view is None:
            return [{"__key__": k, **values[u]} for k, u in zip(keys, units)]
        params = self.param[rows].tolist()
        labels = self.labels[rows].tolist() if self.label in self.fields else None
        out = []
        for j, (key, u) in enumerate(zip(keys, units)):
            sample = self.view.apply({"__key__": key, **values[u]}, params[j])
            if labels is not None:
                sample[self.label] = labels[j]
            out.append(sample)
        return out

    def _values(self, units: np.ndarray, shared: np.ndarray, slots: np.ndarray,
                columns: dict[str, tuple[np.ndarray, list[np.ndarray]]], empty: Empty) -> list[dict[str, Any]]:
        """Decoded members of each stored sample in ``units`` (index rows, one per stored sample).

        ``slots[i]``: the batch position of unit ``i``'s first row, its row in the batch arrays put in ``columns``.
        """
        codes = self.code[units].tolist()
        states = {c: verified.shard_state(self.paths[c], self._fd(c)) for c in set(codes)}
        if self.view is None and (steady_values := steady.read_values(self, units, shared, slots, states, columns,
                                                                      empty)) is not None:
            return steady_values  # every member verified before: no per-member checks or payload dicts
        values: list[dict[str, Any] | None] = [None] * len(units)
        keys: list[tuple] = []
        if self.view is not None:
            first = self.offset[self.names[0]][units].tolist()
            keys = [(self.paths[c], states[c].key, o, tuple(self.names))
                    for c, o in zip(codes, first)]
            values = [verified.cached(k) for k in keys]
        todo = np.array([i for i, v in enumerate(values) if v is None], dtype=np.int64)
        if len(todo):
            read_only = (shared[todo] | (self.view is not None)).tolist()
            payloads = self._payloads(units[todo], states, slots[todo], columns, empty)
            decoded = self._decoded(units[todo], payloads, read_only)
            for i, got in zip(todo.tolist(), decoded):
                values[i] = got
                if self.view is not None and states[codes[i]].settled:
                    verified.remember(keys[i], got)
        return values

    def _decoded(self, units: np.ndarray, payloads: list[dict[str, Any]],
                 read_only: list[bool]) -> list[dict[str, Any]]:
        """Decoded members, field by field: fixed-shape npy fields of a batch as one array (rows are views)."""
        out: list[dict[str, Any]] = [{} for _ in payloads]
        for name in self.names:  # sorted: the insertion order of read()
            column = [p[name] for p in payloads]
            small = self.batched[name] and len(column) > 1 and len(column[0]) <= BATCH_DECODE_MAX
            batch = decode_npy_batch(column) if small and name not in self.layouts else None
            if batch is not None:  # rows of a read-only array: already safe to share
                for values, row in zip(out, batch):
                    values[name] = row
                continue
            prefix, decode = self.layouts[name].prefix if name in self.layouts else None, self.decode[name]
            for k, payload in enumerate(column):
                if type(payload) is tuple:  # (npy header, row of the batch array): decoded where it lies
                    if payload[0] == prefix:
                        out[k][name] = payload[1]
                        continue
                    payload = bytes(payload[0]) + payload[1].tobytes()  # another valid header: parse it
                try:
                    value = decode(payload)
                except CodecError as exc:
                    raise self._fail(int(units[k]), name, str(exc)) from exc
                out[k][name] = verified.read_only(value) if read_only[k] else value
        return out

    def _cuts(self, name: str, units: np.ndarray, slots: np.ndarray, cuts: list[list[direct.Cut]],
              columns: dict[str, tuple[np.ndarray, list[np.ndarray]]], empty: Empty) -> list[np.ndarray | None]:
        """Send the data of field ``name``'s members of ``units`` to rows ``slots`` of a new batch array.

        Members of another size than the field's layout (another npy header) are read as usual (None).
        """
        lay = self.layouts[name]
        array = empty((len(units), *lay.shape), lay.dtype)
        dests, rows = direct.rows_of(array)
        columns[name] = (array, rows)
        head, n = len(lay.prefix), lay.nbytes
        fits = (self.size[name][units] == head + n).tolist()
        data = (self.offset[name][units] + head).tolist()
        mine: list[np.ndarray | None] = [None] * len(units)
        for i, slot in enumerate(slots.tolist()):
            if fits[i]:
                cuts[i].append((data[i], n, dests[slot]))
                mine[i] = rows[slot]
        return mine

    def _payloads(self, units: np.ndarray, states: dict[int, verified.ShardState], slots: np.ndarray,
                  columns: dict[str, tuple[np.ndarray, list[np.ndarray]]], empty: Empty) -> list[dict[str, Any]]:
        """The checked payload bytes of every requested member of ``units`` (one dict per unit); a member read
        into a batch array (:mod:`mmdata.shards.direct`) as ``(npy header bytes, row)``."""
        n, runs = len(units), self.runs
        starts = np.concatenate([self.offset[run[0]][units] - BLOCK for run in runs])
        ends = np.concatenate([self.offset[run[-1]][units] + self.size[run[-1]][units] for run in runs])
        cuts: list[list[direct.Cut]] = [[] for _ in range(len(starts))]
        kept = {name: self._cuts(name, units, slots, cuts[r * n:(r + 1) * n], columns, empty)
                for r, run in enumerate(runs) for name in run if name in self.layouts}
        ranges = direct.fetch(self._fd, np.tile(self.code[units], len(runs)), starts, ends, cuts,
                              lambda k: self._fail(int(units[k % n]), runs[k // n][0], "shard ends early (truncated)"))
        seen = [states[c].verified for c in self.code[units].tolist()]
        payloads: list[dict[str, Any]] = [{} for _ in range(n)]
        suspects: dict[str, list[tuple[int, memoryview]]] = {}
        for r, run in enumerate(runs):
            blocks, base = ranges[r * n:(r + 1) * n], starts[r * n:(r + 1) * n].copy()  # + bytes cut out before
            for name in run:
                offsets = self.offset[name][units]
                rel, sizes, offsets = (offsets - base).tolist(), self.size[name][units].tolist(), offsets.tolist()
                if name in kept:
                    rows, head = kept[name], len(self.layouts[name].prefix)
                    sizes = [size if row is None else head for size, row in zip(sizes, rows)]
                    base += np.array([row is not None for row in rows]) * self.layouts[name].nbytes
                check = suspects.setdefault(name, [])
                for i, (payload, block, at, size, offset, done) in enumerate(zip(payloads, blocks, rel, sizes,
                                                                                 offsets, seen)):
                    payload[name] = block[at:at + size]
                    if offset not in done:
                        check.append((i, block[at - BLOCK:at]))
                if name in kept:
                    for payload, row in zip(payloads, kept[name]):
                        if row is not None:
                            payload[name] = (payload[name], row)
        fields = [(name, check) for name, check in suspects.items() if check]
        if fields:
            self._verify(units, payloads, fields, states)
        return payloads

    def _verify(self, units: np.ndarray, payloads: list[dict[str, Any]],
                fields: list[tuple[str, list[tuple[int, memoryview]]]], states: dict[int, verified.ShardState]) -> None:
        """Tar headers (all fields at once) and crc32 of the members not yet verified in this process.

        Args:
            fields: per field, its unchecked members as (unit position, 512-byte tar header).
        """
        rows = [units[np.array([i for i, _ in check], dtype=np.int64)] for _, check in fields]
        headers = [h for _, check in fields for _, h in check]
        members = [(s + self.suffix[name]).encode()
                   for (name, _), r in zip(fields, rows) for s in self.samples[r].tolist()]
        sizes = np.concatenate([self.size[name][r] for (name, _), r in zip(fields, rows)])
        if len(headers) < VECTOR_FROM:  # numpy's fixed cost per call exceeds a few plain-Python checks
            suspects = range(len(headers))
        else:
            table = np.frombuffer(b"".join(headers), np.uint8).reshape(len(headers), BLOCK)
            suspects = np.flatnonzero(verified.header_suspects(table, members, sizes)).tolist()
        for k in suspects:
            problem = verified.header_problem(headers[k], members[k], int(sizes[k]))
            if problem is not None:
                name = [name for (name, check) in fields for _ in check][k]
                raise self._fail(int(np.concatenate(rows)[k]), name, problem)
        for (name, check), r in zip(fields, rows):
            self._crcs(name, r, check, payloads, states)

    def _crcs(self, name: str, rows: np.ndarray, check: list[tuple[int, memoryview]], payloads: list[dict[str, Any]],
              states: dict[int, verified.ShardState]) -> None:
        """crc32 from the index of field ``name``'s members ``check`` (index rows ``rows``); passed ones recorded."""
        crcs, offsets, codes = self.crc[name][rows].tolist(), self.offset[name][rows].tolist(), self.code[rows].tolist()
        for k, (i, _) in enumerate(check):
            data = payloads[i][name]
            crc = crc32(data[1], crc32(data[0])) if type(data) is tuple else crc32(data)
            if crc != crcs[k]:
                raise self._fail(int(rows[k]), name, "payload checksum mismatch (corrupted)")
        for offset, code in zip(offsets, codes):
            if states[code].settled:
                states[code].verified.add(offset)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
