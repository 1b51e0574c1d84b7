#!/usr/bin/env python
"""Read speed per codec family: ``MemberReader.read_batch`` + collate against the decode ceiling, side by side.

For each family a synthetic mini (``mmdata.synth``) is sharded into a temporary directory
(``mmdata.shards.build.shard_corpus``) and its train split is read in shuffled batches of 64 (one seeded
permutation of all rows, the same batches for both paths):

- ceiling: every shard's bytes already in RAM (read before timing); per batch, each requested member is sliced
  out of those bytes (zero copy) and decoded with the fastest decoder we have for its codec (fixed-shape npy
  fields of small members as one array per batch, ``codec.decode_npy_batch``, as the reader does; ``np.frombuffer``
  for other npy, ``cv2.imdecode`` straight to RGB for 3-channel jpg/png, decord for mp4, pyarrow for arrow), a View
  cut applied per row, then :func:`mmdata.shards.collate.collate` into the same batch dict. No file access,
  no header check, no crc32: the work a reader cannot avoid.
- mmdata: ``MemberReader.read_batch(rows)`` (preads, header checks, crc32 from the index, decode, shared
  decodes) + the same collate. "first" is the first pass of a fresh process state (every member verified:
  header check and crc32); "steady" is a later pass (members verified once per process are not re-hashed
  while their shard's stat is unchanged).

The two paths alternate batch by batch within a pass (so load drift on a shared machine hits both); each repeat
is a first pass and a steady pass; ratio = ceiling time / mmdata time of a pass (1.0 = at the ceiling), the
median over repeats (times per batch: medians too). Shared decodes: the stocks corpus (an ``arrow`` series
stored once per split, each window a row) at several history lengths, time per row with shared decodes vs
decoding the stored series for every row (what the reader did before): the first stays flat as the series
grows (O(days + windows) per split), the second grows with days.

Run: ``python bench/codec_families.py [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmdata.shards import verified  # noqa: E402
from mmdata.shards.build import shard_corpus  # noqa: E402
from mmdata.shards.members import BATCH_DECODE_MAX  # noqa: E402
from mmdata.shards.codec import decode_npy_batch, decoder  # noqa: E402
from mmdata.shards.collate import collate  # noqa: E402
from mmdata.shards.read import SplitShards  # noqa: E402
from mmdata.shards.members import MemberReader  # noqa: E402
from common import settled  # noqa: E402
from mmdata.synth import SYNTHS  # noqa: E402

BATCH = 64


@dataclass(frozen=True)
class Family:
    """One codec family: the corpus mini that stores it, its sizes and reader options, and the fields read."""

    name: str
    corpus: str
    synth: dict[str, Any]
    reader: dict[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] | None = None  # None: every field


FAMILIES = (
    Family("npy (avmnist)", "avmnist", {"train": 1200, "test": 60}),
    Family("npy seq (mosi)", "mosi", {"train": 320, "valid": 20, "test": 20}, {},
           ("feat_text", "feat_audio", "feat_vision", "label")),
    Family("jpg + txt (hateful_memes)", "hateful_memes", {"train": 320, "valid": 20, "test": 20, "unseen": 20},
           {"image_size": 64}),
    Family("png rgb + depth (nyuv2)", "nyuv2", {"train": 96, "test": 8}),
    Family("mp4 (crema_d)", "crema_d", {"actors": 8, "sentences": 2, "broken": False},
           {"video_format": "mp4", "image_size": 64}, ("video", "label")),
    Family("arrow window view (stocks)", "stocks", {"days": 700, "defects": False},
           {"window": 40, "train_windows": 400, "valid_windows": 50}),
)


def build(family: Family, work: Path) -> SplitShards:
    """Synthesise and shard one family's mini under ``work``; return its opened train split."""
    out = work / family.corpus / "shards"
    if not (out / "train" / "manifest.json").exists():
        root = SYNTHS[family.corpus](work / family.corpus / "raw", seed=0, **family.synth)
        shard_corpus(family.corpus, root, out, reader=family.reader, max_samples=200, progress=False)
    return SplitShards.open(settled(out) / "train")


def _batches(rows: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(rows)
    return [order[i:i + BATCH] for i in range(0, rows, BATCH)]


class Ceiling:
    """Decode + collate from shard bytes held in RAM (see the module docstring)."""

    def __init__(self, shards: SplitShards, fields: tuple[str, ...]) -> None:
        self.shards, self.fields = shards, fields
        self.blobs = {name: memoryview((shards.directory / name).read_bytes()) for name in set(shards.index["shard"])}
        view = shards.view
        self.stored = [f for f in fields if not (view and f == shards.label)]
        self.decode = {f: decoder(shards.stored[f]) for f in self.stored}
        self.cols = {k: shards.index[k].tolist() for k in shards.index if not k.startswith("length_")}

    def _stored(self, row: int) -> dict[str, Any]:
        cols, blob = self.cols, self.blobs[self.cols["shard"][row]]
        sample = {"__key__": cols["key"][row]}
        for f in self.stored:
            offset = cols[f"offset_{f}"][row]
            sample[f] = self.decode[f](blob[offset:offset + cols[f"size_{f}"][row]])
        return sample

    def _column(self, name: str, rows: list[int]) -> list[Any]:
        """One field of many rows: fixed-shape npy as one array (the reader's batch decode), else one by one."""
        cols, spec = self.cols, self.shards.stored[name]
        payloads = [self.blobs[cols["shard"][r]][cols[f"offset_{name}"][r]:][:cols[f"size_{name}"][r]] for r in rows]
        if spec.codec == "npy" and spec.shape and None not in spec.shape and len(rows) > 1 \
                and len(payloads[0]) <= BATCH_DECODE_MAX:
            batch = decode_npy_batch(payloads)
            if batch is not None:
                return list(batch)
        return [self.decode[name](p) for p in payloads]

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        view, cols = self.shards.view, self.cols
        if view is None:
            rows_l = rows.tolist()
            columns = {f: self._column(f, rows_l) for f in self.stored}
            samples = [{"__key__": cols["key"][r], **{f: columns[f][i] for f in self.stored}}
                       for i, r in enumerate(rows_l)]
        else:  # each stored sample decoded once per batch, as the ceiling of shared decodes
            stored: dict[str, dict[str, Any]] = {}
            samples = []
            for r in rows.tolist():
                base = stored.get(cols["sample"][r]) or stored.setdefault(cols["sample"][r], self._stored(r))
                sample = view.apply(base, cols[view.param][r])
                sample["__key__"] = cols["key"][r]
                if self.shards.label in self.fields:
                    sample[self.shards.label] = cols["label"][r]
                samples.append(sample)
        return collate(samples, self.shards.features, self.fields)


def _mmdata_pass(shards: SplitShards, fields: tuple[str, ...], batches: list[np.ndarray]) -> None:
    reader = MemberReader(shards.directory, shards.stored, shards.index, fields, view=shards.view,
                          label=shards.label)
    try:
        for rows in batches:
            collate(reader.read_batch(rows), shards.features, fields)
    finally:
        reader.close()


#: The clock of the timings: ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU time,
#: which time spent descheduled on a shared machine does not inflate; both paths are single-threaded).
CLOCK = [time.perf_counter]


def _timed(fn: Callable[[], object]) -> float:
    start = CLOCK[0]()
    fn()
    return CLOCK[0]() - start


def _interleaved(ceiling: Ceiling, shards: SplitShards, fields: tuple[str, ...],
                 batches: list[np.ndarray]) -> tuple[float, float]:
    """One pass of both paths, batch by batch in alternating order (drift on a shared machine hits both)."""
    reader = MemberReader(shards.directory, shards.stored, shards.index, fields, view=shards.view,
                          label=shards.label)
    spent = [0.0, 0.0]
    paths = (lambda rows: ceiling.batch(rows), lambda rows: collate(reader.read_batch(rows), shards.features, fields))
    try:
        for b, rows in enumerate(batches):
            for p in ((0, 1) if b % 2 == 0 else (1, 0)):
                spent[p] += _timed(lambda: paths[p](rows))
    finally:
        reader.close()
    return spent[0], spent[1]


def measure_family(family: Family, work: Path, repeats: int) -> dict[str, Any]:
    """Median pass times and ratios of the ceiling and of mmdata (first pass, steady state) on one family."""
    shards = build(family, work)
    fields = family.fields or tuple(shards.features)
    batches = _batches(shards.manifest["rows"])
    ceiling = Ceiling(shards, fields)
    times: dict[str, list[float]] = {"ceiling": [], "first": [], "steady": [], "ratio_first": [], "ratio_steady": []}
    for _ in range(repeats):
        for kind in ("first", "steady"):
            if kind == "first":
                verified.forget()  # a fresh process state: nothing verified, nothing cached
            top, ours = _interleaved(ceiling, shards, fields, batches)
            times["ceiling"].append(top)
            times[kind].append(ours)
            times[f"ratio_{kind}"].append(top / ours)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_batch = {f"{k}_ms_per_batch": 1e3 * med[k] / len(batches) for k in ("ceiling", "first", "steady")}
    return {"bench": "codec_families", "family": family.name, "corpus": family.corpus,
            "rows": shards.manifest["rows"], "batch": BATCH, **per_batch, "ratio_first": med["ratio_first"],
            "ratio_steady": med["ratio_steady"]}


def _unshared_pass(shards: SplitShards, batches: list[np.ndarray]) -> None:
    """Every row decodes its stored series again (the reader before shared decodes), caches off."""
    fields = tuple(shards.features)
    reader = MemberReader(shards.directory, shards.stored, shards.index, fields, view=shards.view,
                          label=shards.label)
    try:
        for rows in batches:
            samples = []
            for r in rows.tolist():
                verified.forget()
                samples.extend(reader.read_batch([r]))
            collate(samples, shards.features, fields)
    finally:
        reader.close()


def measure_shared(work: Path, repeats: int) -> list[dict[str, Any]]:
    """Stocks at window 500 (MultiBench's train/valid 3200/500 windows on the longest history): ms per row."""
    out = []
    for days, train in ((1300, 400), (2500, 1600), (4300, 3200)):
        family = Family(f"stocks {days} days", "stocks", {"days": days, "defects": False},
                        {"window": 500, "train_windows": train, "valid_windows": 50 if train < 3200 else 500})
        shards = build(family, work / f"stocks{days}")
        batches = _batches(shards.manifest["rows"])[:8]  # 512 rows: enough for a per-row time
        rows = sum(len(b) for b in batches)
        fields = tuple(shards.features)
        shared, unshared = [], []
        for _ in range(repeats):
            verified.forget()
            shared.append(_timed(lambda: _mmdata_pass(shards, fields, batches)))
            unshared.append(_timed(lambda: _unshared_pass(shards, batches)))
        stored = int(shards.index["size_series_fnb"][0]) + int(shards.index["size_series_health"][0])
        out.append({"bench": "shared_decodes", "days": days, "windows": shards.manifest["rows"], "window": 500,
                    "stored_bytes": stored, "rows_read": rows,
                    "shared_us_per_row": 1e6 * statistics.median(shared) / rows,
                    "unshared_us_per_row": 1e6 * statistics.median(unshared) / rows})
    return out


def measure(repeats: int = 3, work: Path | None = None, only: str = "") -> list[dict[str, Any]]:
    """Rows for every codec family (whose name contains ``only``) and, unfiltered, the shared-decode sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work or tmp)
        rows = [measure_family(f, base / "families", repeats) for f in FAMILIES if only in f.name]
        return rows + ([] if only else measure_shared(base / "shared", repeats))


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'family':32s} {'rows':>5s} {'ceiling ms':>10s} {'first ms':>9s} {'steady ms':>9s} "
          f"{'ratio 1st':>9s} {'ratio steady':>12s}   (ms per batch of {BATCH}; ratio = ceiling / mmdata)")
    for r in rows:
        if r["bench"] == "codec_families":
            print(f"{r['family']:32s} {r['rows']:5d} {r['ceiling_ms_per_batch']:10.2f} {r['first_ms_per_batch']:9.2f} "
                  f"{r['steady_ms_per_batch']:9.2f} {r['ratio_first']:9.2f} {r['ratio_steady']:12.2f}")
    print(f"\n{'stocks, window 500':20s} {'windows':>7s} {'stored KB':>9s} {'shared us/row':>13s} "
          f"{'unshared us/row':>15s} {'speed-up':>8s}")
    for r in rows:
        if r["bench"] == "shared_decodes":
            print(f"{r['days']:9d} days {'':5s} {r['windows']:7d} {r['stored_bytes'] / 1024:9.0f} "
                  f"{r['shared_us_per_row']:13.1f} {r['unshared_us_per_row']:15.1f} "
                  f"{r['unshared_us_per_row'] / r['shared_us_per_row']:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="keep the minis here (reused when present)")
    parser.add_argument("--only", default="", help="only the families whose name contains this (no stocks rows)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: perf_counter; cpu: process_time (steadier when other jobs share the cores)")
    args = parser.parse_args()
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    _print(measure(args.repeats, args.work, args.only))


if __name__ == "__main__":
    main()
