"""Shard writing on Ray against the local engine (issue 15.2): samples/s of ``shard_corpus`` on one corpus.

A synthetic AV-MNIST (``mmdata.synth``, real layout: six .npy files; ``--train`` + ``--test`` rows) is sharded
whole (train, valid, test) with:

- ``local``, 1 process (and 2, for reference): the reader in the driver, :mod:`mmdata.shards.engine`;
- ``ray``, a local Ray instance with 1 and 2 CPUs (``ray.init(num_cpus=N)``): tasks read their own parts of the
  .npy files, check and encode them, and write the shards (:mod:`mmdata.shards.ray_engine`).

Each configuration runs once untimed (Ray's workers import mmdata; the page cache is filled), then ``--repeats``
timed runs; printed: samples/s (median, and each run), the ratio to local 1 process, and whether every output
file (manifests, index, shards, corpus record) is byte-identical to local 1 process's. Ray's own start
(``ray.init``, seconds, printed apart) is left out: a cluster is started once for many corpora. The machine's
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


def _measure(root: Path, out: Path, engine: str, processes: int, repeats: int) -> list[float]:
    """samples/s of ``repeats`` timed runs after one untimed warm-up."""
    _run(root, out, engine, processes)
    rates = []
    for _ in range(repeats):
        seconds, samples = _run(root, out, engine, processes)
        rates.append(samples / seconds)
    return rates


def _ray_rates(root: Path, out: Path, cpus: int, repeats: int) -> tuple[list[float], float]:
    """samples/s on a local Ray instance with ``cpus`` CPUs, and the seconds ``ray.init`` took."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    started = time.perf_counter() - start
    try:
        return _measure(root, out, "ray", cpus, repeats), started
    finally:
        ray.shutdown()


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
    results, reference = {}, workdir / "out" / "local-1" / "avmnist"
    for processes in (1, 2):
        results[f"local, {processes} process{'es' * (processes > 1)}"] = (
            _measure(root, workdir / "out" / f"local-{processes}" / "avmnist", "local", processes, args.repeats), None)
    for cpus in (1, 2):
        results[f"ray, {cpus} worker{'s' * (cpus > 1)}"] = _ray_rates(
            root, workdir / "out" / f"ray-{cpus}" / "avmnist", cpus, args.repeats)
    base = statistics.median(results["local, 1 process"][0])
    golden = _files(reference)
    for (name, (rates, started)), folder in zip(results.items(), ("local-1", "local-2", "ray-1", "ray-2")):
        same = _files(workdir / "out" / folder / "avmnist") == golden
        extra = f", ray.init {started:.1f} s (not counted)" if started is not None else ""
        print(f"{name:18s} {statistics.median(rates):8.0f} samples/s (runs {', '.join(f'{r:.0f}' for r in rates)})"
              f"  x{statistics.median(rates) / base:.2f} of local 1 process  byte-identical: {same}{extra}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
