"""Shard writing on Ray against the local engine (issue 15.2): samples/s of ``shard_corpus`` on one corpus.

A synthetic AV-MNIST (``mmdata.synth``, real layout: six .npy files; ``--train`` + ``--test`` rows) is sharded
whole (train, valid, test) with:

- ``local``, 1 process (the reader in the driver, :mod:`mmdata.shards.engine`) and 2 (the two phases below on
  this machine's processes, :mod:`mmdata.shards.localtasks`);
- ``ray``, a local Ray instance with 1 and 2 CPUs (``ray.init(num_cpus=N)``): tasks read their own parts of the
  .npy files, check and encode them, and write the shards (:mod:`mmdata.shards.parted`,
  :mod:`mmdata.shards.ray_engine`).

Per repeat, every configuration runs once untimed (Ray's workers import mmdata; the page cache is filled) and
once timed, configurations interleaved and their order rotated from repeat to repeat (a burst of load from the
machine's other users falls on each alike); Ray gets a fresh local instance per repeat. Printed: samples/s
(median of the repeats, and each run), the ratio to local 1 process, and whether every output file (manifests,
index, shards, corpus record) is byte-identical to local 1 process's. Ray's own start (``ray.init``, printed
apart) is left out: a cluster is started once for many corpora. The machine's
CPU count and load average are printed first (others' work on a shared machine skews the figures).

    python bench/ray_write.py [--train 10000] [--test 1000] [--repeats 3] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS


def _files(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _run(root: Path, out: Path, engine: str, processes: int) -> tuple[float, int]:
    """Wall seconds of one whole-corpus shard run, and the raw items it read."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifests = shard_corpus("avmnist", root, out, max_samples=250, progress=False, engine=engine,
                             processes=processes if engine == "local" else None)
    return time.perf_counter() - start, sum(m["report"]["raw"] for m in manifests.values())


def _timed(root: Path, out: Path, engine: str, processes: int) -> tuple[float, float | None]:
    """samples/s of one run after an untimed warm-up; for Ray on a fresh local instance of ``processes`` CPUs
    (started and shut down here), with the seconds ``ray.init`` took."""
    started = None
    if engine == "ray":
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=processes, include_dashboard=False, logging_level="WARNING")
        started = time.perf_counter() - start
    try:
        _run(root, out, engine, processes)
        seconds, samples = _run(root, out, engine, processes)
    finally:
        if engine == "ray":
            ray.shutdown()
    return samples / seconds, started


CONFIGS = {"local, 1 process": ("local", 1), "local, 2 processes": ("local", 2), "ray, 1 worker": ("ray", 1),
           "ray, 2 workers": ("ray", 2)}


def _folder(name: str) -> str:
    engine, processes = CONFIGS[name]
    return f"{engine}-{processes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given; default a temporary folder")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdata-ray-bench-"))
    root = workdir / "raw" / f"avmnist-{args.train}-{args.test}"
    if not (root / "train_labels.npy").exists():
        SYNTHS["avmnist"](root, train=args.train, test=args.test)
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start; AV-MNIST synth train "
          f"{args.train} + test {args.test}, max_samples 250, {args.repeats} timed runs each after a warm-up")
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    starts: list[float] = []
    for repeat in range(args.repeats):  # configurations interleaved, order rotated: load bursts fall on each alike
        names = list(CONFIGS)[repeat % len(CONFIGS):] + list(CONFIGS)[:repeat % len(CONFIGS)]
        for name in names:
            rate, started = _timed(root, workdir / "out" / _folder(name) / "avmnist", *CONFIGS[name])
            rates[name].append(rate)
            starts += [started] if started is not None else []
    base = statistics.median(rates["local, 1 process"])
    golden = _files(workdir / "out" / "local-1" / "avmnist")
    for name, runs in rates.items():
        same = _files(workdir / "out" / _folder(name) / "avmnist") == golden
        print(f"{name:18s} {statistics.median(runs):8.0f} samples/s (runs {', '.join(f'{r:.0f}' for r in runs)})"
              f"  x{statistics.median(runs) / base:.2f} of local 1 process  byte-identical: {same}")
    ray_speedup = statistics.median(rates["ray, 2 workers"]) / statistics.median(rates["ray, 1 worker"])
    print(f"ray 2 workers / ray 1 worker: x{ray_speedup:.2f}; ray.init (not counted above): median "
          f"{statistics.median(starts):.1f} s")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
