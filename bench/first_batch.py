#!/usr/bin/env python
"""Time to first batch and peak memory: ``mmdata.load`` vs MultiBench's load-everything AV-MNIST loader.

Each measurement is a fresh child process (``--child``) that imports torch and the loader's code, notes its
resident memory (``VmRSS``), then times building the loader and taking its first batch (batch 40, shuffled,
workers 0), and reports its peak resident memory (``VmHWM``; ``ru_maxrss`` would include the parent's peak, see
``child``). The AV-MNIST
mini is measured at 1x and ``--scale`` x the params.yaml size (default 10x); loaders alternate, medians of
``--repeats``. A loader bounded by its batch (and shuffle buffer) keeps both figures flat as the corpus grows;
one that loads everything grows with the corpus.

Run: ``python bench/first_batch.py [--scale 10] [--repeats 3] [--workdir DIR]``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BATCH = 40  # MultiBench's AV-MNIST default


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (``VmRSS``: now, ``VmHWM``: peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(kind: str, raw: Path, shards: Path) -> dict[str, Any]:
    """In a fresh process: seconds to the first batch, peak RSS and RSS after imports (bytes)."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    import torch  # noqa: F401  (both loaders need it; imported before the baseline)

    import mmdata
    import read_speed

    base = _status_bytes("VmRSS")
    start = time.perf_counter()
    if kind == "mmdata":
        loader = mmdata.load(shards, "train", fields=["image", "audio_spec", "label"], batch_size=BATCH,
                             shuffle=True)
    else:
        loader, _ = read_speed.avmnist_raw(raw, BATCH, 0)
    next(iter(loader))
    seconds = time.perf_counter() - start
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (here a
    # report process that may have built a big mini), so it would report the parent's peak.
    peak = _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak": peak, "base": base}


def _spawn(kind: str, raw: Path, shards: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(raw), str(shards)],
                         capture_output=True, text=True)
    if out.returncode:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{kind} child on {shards} failed (exit {out.returncode}): {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(scales: tuple[float, ...] = (1.0, 10.0), repeats: int = 3, workdir: Path | None = None) -> list[dict]:
    """Rows: per scale, time-to-first-batch and peak-RSS ratios (MultiBench / mmdata), and mmdata's growth."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    from peers import build_mini

    with tempfile.TemporaryDirectory(prefix="mmdata-first-") as tmp:
        work = Path(workdir or tmp)
        med: dict[tuple[float, str], dict[str, float]] = {}
        for scale in scales:
            raw, shards = build_mini("avmnist", work, scale)
            runs: dict[str, list[dict]] = {"mmdata": [], "multibench": []}
            for r in range(repeats):
                for kind in (("mmdata", "multibench") if r % 2 == 0 else ("multibench", "mmdata")):
                    runs[kind].append(_spawn(kind, raw, shards))
            for kind, group in runs.items():
                med[(scale, kind)] = {k: statistics.median(g[k] for g in group) for k in ("seconds", "peak", "base")}
    return _rows(scales, med)


def _rows(scales: tuple[float, ...], med: dict) -> list[dict]:
    rows = []
    for scale in scales:
        ours, ref = med[(scale, "mmdata")], med[(scale, "multibench")]
        name = f"avmnist x{scale:g}"
        rows.append({"section": "first batch", "corpus": name, "metric": "time to first batch", "unit": "s",
                     "ours": ours["seconds"], "ref": ref["seconds"], "ratio": ref["seconds"] / ours["seconds"],
                     "reference": "MultiBench load-all", "goal": 1.0, "met": ref["seconds"] > ours["seconds"]})
        rows.append({"section": "first batch", "corpus": name, "metric": "peak RSS", "unit": "MB",
                     "ours": ours["peak"] / 2**20, "ref": ref["peak"] / 2**20, "ratio": ref["peak"] / ours["peak"],
                     "reference": "MultiBench load-all", "goal": 1.0, "met": ref["peak"] > ours["peak"],
                     "note": f"RSS after imports {ours['base'] / 2**20:.0f} MB (mmdata) / "
                             f"{ref['base'] / 2**20:.0f} MB (MultiBench); above that: "
                             f"{(ours['peak'] - ours['base']) / 2**20:.0f} / {(ref['peak'] - ref['base']) / 2**20:.0f} MB"})
    if len(scales) > 1:  # bounded: mmdata's own figures at the largest scale over the smallest
        lo, hi = med[(scales[0], "mmdata")], med[(scales[-1], "mmdata")]
        for metric, key, unit in (("time to first batch", "seconds", "s"), ("peak RSS", "peak", "MB")):
            div = 2**20 if unit == "MB" else 1
            rows.append({"section": "first batch", "corpus": f"avmnist x{scales[-1]:g} vs x{scales[0]:g}",
                         "metric": f"mmdata {metric} growth", "unit": unit, "ours": hi[key] / div,
                         "ref": lo[key] / div, "ratio": lo[key] / hi[key], "reference": f"mmdata at x{scales[0]:g}",
                         "goal": None, "met": None})  # informational: the index grows with the rows
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], Path(argv[2]), Path(argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    for row in measure((1.0, args.scale), args.repeats, args.workdir):
        print(f"{row['corpus']:22s} {row['metric']:28s} mmdata {row['ours']:8.2f} {row['unit']:2s}  "
              f"ref {row['ref']:8.2f} {row['unit']:2s}  ratio {row['ratio']:6.2f}  {row.get('note', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
