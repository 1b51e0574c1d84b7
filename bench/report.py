#!/usr/bin/env python
"""One table of every performance ratio (issue 14), as text, ``bench/results/report.json`` and ``report.png``.

Sections (each measured side by side in one run; a missing or failing one prints "not measured: <reason>"):

- ``peers``: ``mmdata.load`` vs webdataset (its fastest decoder), MMF per-file and MultiBench load-all
  (``bench/peers.py``).
- ``first_batch``: time to first batch and peak RSS vs MultiBench's AV-MNIST loader at 1x and 10x
  (``bench/first_batch.py``).
- ``codecs``: the mmdata reader vs the decode ceiling per codec family, and shared decodes of stock windows
  (``bench/codec_families.py``).
- ``workers``: 2 DataLoader workers vs none per corpus (``bench/workers.py``).
- ``write``: encode ceiling and 1 vs 2 writer processes, on samples in memory and on a whole AV-MNIST release on
  disk (``bench/write_speed.py``).
- ``samplers``: each sampler, ``gather`` and the tuple loss vs loading the batch (``bench/samplers.py``).

Every ratio is oriented so that the goal reads "ratio >= goal". Run: ``python bench/report.py [--quick]
[--only SECTION ...]`` (``make bench``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import report_rows as rr  # noqa: E402

RESULTS = HERE / "results"


def _call(module: str, fn: str = "measure", **kwargs: Any) -> list[dict]:
    return list(getattr(importlib.import_module(module), fn)(**kwargs))


def sections(quick: bool, work: Path) -> dict[str, Callable[[], list[dict]]]:
    """Section name -> a thunk returning its table rows (sizes smaller under ``quick``)."""
    reps = 1 if quick else 3
    return {
        "peers": lambda: rr.peers(_call("peers", repeats=reps, min_rows=500 if quick else 1000,
                                        workdir=work / "minis")),
        "first_batch": lambda: rr.first_batch(_call("first_batch", scales=(1.0, 10.0), repeats=reps,
                                                    workdir=work / "minis")),
        "codecs": lambda: rr.codecs(_call("codec_families", repeats=reps, work=work / "codecs")),
        "workers": lambda: rr.workers(_call("workers", batch_sizes=(32,) if quick else (32, 128), workers=(0, 2),
                                            epochs=3, repeats=reps)),
        # 5 repeats: a speed-up of two short runs swings most with the machine's other users (seconds, not minutes)
        "write": lambda: rr.write(_call("write_speed", samples=2000 if quick else 10000,
                                        processes=(1, 2), repeats=1 if quick else 5)
                                  + _call("write_speed", "measure_release", train=2000 if quick else 10000,
                                          processes=(1, 2), repeats=1 if quick else 3)),
        "samplers": lambda: rr.samplers(_call("samplers", batch_sizes=(32, 128, 256), repeats=reps)),
    }


def run_section(name: str, thunk: Callable[[], list[dict]]) -> tuple[list[dict], float]:
    """The section's rows, or one "not measured" row naming why (never silently omitted)."""
    start = time.perf_counter()
    try:
        rows = thunk()
        if not rows:
            raise RuntimeError("it returned no rows")
    except ModuleNotFoundError as exc:
        rows = [rr.missing(name, f"module {exc.name} not found")]
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        rows = [rr.missing(name, f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})")]
    return rows, time.perf_counter() - start


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"cpu": "unknown", "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
                            "os": platform.platform(), "python": platform.python_version(),
                            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    info["cpu"] = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                        if line.startswith("model name")), platform.processor() or "unknown")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    info["ram_gb"] = round(total / 2**20, 1)
    for module in ("torch", "numpy", "cv2", "webdataset", "pyarrow", "PIL", "decord"):
        try:
            info[module] = importlib.import_module(module).__version__
        except Exception:  # noqa: BLE001 - an absent optional package is a fact to report
            info[module] = None
    import torch

    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    info["commit"] = _git("rev-parse", "HEAD")
    info["dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return info


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def print_table(rows: list[dict], info: dict[str, Any]) -> None:
    print(f"\nmmdata performance report - {info['cpu']}, {info['cores_usable']} of {info['cores']} cores, "
          f"{info['ram_gb']} GB RAM, GPU {info['gpu']}, {info['os']}; python {info['python']}, torch "
          f"{info['torch']}, numpy {info['numpy']}, cv2 {info['cv2']}, webdataset {info['webdataset']}; "
          f"commit {info['commit'][:10]}{' (dirty)' if info['dirty'] else ''}, {info['date']}")
    print("ratio = mmdata over the reference, oriented so higher is better; goal: ratio >= goal. Values are "
          "samples/s unless a unit is given.")
    header = f"{'section':11s} {'corpus / codec':30s} {'mmdata':>10s} {'reference':>10s} {'ratio':>7s} " \
             f"{'goal':>6s} {'met':4s} reference is"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if r.get("status"):
            print(f"{r['section']:11s} {r['status']}")
            continue
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        goal = f"{r['goal']:6.2f}" if r["goal"] is not None else f"{'-':>6s}"
        print(f"{r['section']:11s} {r['name'][:30]:30s} {rr.fmt(r['ours'], r['unit']):>10s} "
              f"{rr.fmt(r['ref'], r['unit']):>10s} {r['ratio']:7.2f} {goal} {met:4s} {r['reference']}"
              + (f"  [{r['note']}]" if r.get("note") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, smaller sizes (a smoke run)")
    parser.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                        help="run only these sections: peers first_batch codecs workers write samplers")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the minis here (reused when present)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where report.json and report.png go")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # 2-thread ops on a shared 2-core machine add ms tails (see read_speed.py)
    with tempfile.TemporaryDirectory(prefix="mmdata-report-") as tmp:
        work = args.workdir or Path(tmp)
        table = sections(args.quick, work)
        unknown = sorted(set(args.only or []) - set(table))
        if unknown:
            parser.error(f"unknown section(s) {unknown}; choose from {list(table)}")
        rows, seconds = [], {}
        for name, thunk in table.items():
            if args.only and name not in args.only:
                continue
            print(f"measuring {name} ...", flush=True)
            got, seconds[name] = run_section(name, thunk)
            rows += got
    info = machine()
    print_table(rows, info)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"machine": info, "quick": args.quick,
                                                      "seconds": seconds, "rows": rows}, indent=1, default=str))
    rr.plot(rows, info, args.out / "report.png")
    print(f"\nwrote {args.out / 'report.json'} and {args.out / 'report.png'} "
          f"(sections took {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
