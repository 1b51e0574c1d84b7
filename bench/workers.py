"""Do DataLoader workers pay? ``mmdata.load`` samples/s with 0, 1 and 2 workers on every corpus mini.

For each corpus (train split, all fields) and batch size, one Loader per worker count reads ``epochs`` epochs
(``set_epoch`` between them, as a training loop does), more until the later ones took 0.3 s; the first epoch
(worker start-up included) and the later ones (steady state) are reported separately. The worker counts run interleaved, their order rotated
every repeat, and each figure is the median over repeats, so the ratio ``2 vs 0`` (workers=2 samples/s over
workers=0 samples/s, > 1: workers pay) compares runs taken side by side on the same loaded machine.

    python bench/workers.py [--corpora avmnist mosi] [--batch-sizes 32 128] [--workers 0 1 2] [--epochs 3]
                            [--repeats 3] [--steady-s 0.3] [--shards data/shards] [--json out.json]

The minis are read from ``data/shards/<corpus>`` (``dvc repro``); a missing one is synthesised and sharded into
a temporary directory with the settings of params.yaml.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

import mmdata
from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS

ROOT = Path(__file__).resolve().parent.parent


def corpus_shards(name: str, shards: Path, workdir: Path) -> Path:
    """``shards/<name>`` when its train split exists, else the mini synthesised and sharded under ``workdir``."""
    if (shards / name / "train" / "manifest.json").exists():
        return shards / name
    block = yaml.safe_load((ROOT / "params.yaml").read_text())["corpora"][name]
    out = workdir / "shards" / name
    if not (out / "train" / "manifest.json").exists():
        root = SYNTHS[name](workdir / "raw" / name, **block.get("synth", {}))
        shard_corpus(name, root, out, reader=block.get("reader", {}), progress=False, **block.get("shard", {}))
    return out


def _epochs(shards: Path, batch_size: int, workers: int, epochs: int, steady_s: float) -> list[tuple[int, float]]:
    """(samples, seconds) of each epoch of one Loader (train split, all fields, shuffled): ``epochs`` epochs,
    more while the later ones took under ``steady_s`` in all (a mini's epoch can take 3 ms: one scheduler tick
    would decide the figure), at most 200."""
    loader = mmdata.load(shards, "train", batch_size=batch_size, num_workers=workers, seed=0)
    timings: list[tuple[int, float]] = []
    try:
        while len(timings) < epochs or (sum(t for _, t in timings[1:]) < steady_s and len(timings) < 200):
            loader.set_epoch(len(timings))
            start, samples = time.perf_counter(), 0
            for batch in loader:
                samples += len(batch["__key__"])
            timings.append((samples, time.perf_counter() - start))
    finally:
        getattr(loader, "close", lambda: None)()  # older Loaders had no close(): their workers end per epoch
    return timings


def _row(corpus: str, batch_size: int, workers: int, runs: list[list[tuple[int, float]]]) -> dict:
    first = [samples / seconds for (samples, seconds), *_ in runs]
    steady = [sum(s for s, _ in run[1:]) / sum(t for _, t in run[1:]) for run in runs if len(run) > 1]
    return {"corpus": corpus, "batch_size": batch_size, "workers": workers, "samples": runs[0][0][0],
            "first_sps": statistics.median(first), "steady_sps": statistics.median(steady) if steady else None,
            "epochs": statistics.median(len(run) for run in runs), "repeats": len(runs)}


def measure(batch_sizes: Sequence[int] = (32, 128), workers: Sequence[int] = (0, 2), epochs: int = 3,
            repeats: int = 3, corpora: Sequence[str] | None = None,
            shards: str | Path = ROOT / "data" / "shards", steady_s: float = 0.3) -> list[dict]:
    """Samples/s per (corpus, batch size, workers), median of ``repeats`` interleaved runs.

    Each run reads at least ``epochs`` epochs and keeps going until its epochs after the first took
    ``steady_s`` seconds (at most 200 epochs).

    Returns:
        One row per (corpus, batch_size, workers): ``first_sps`` (epoch 0, worker start-up included),
        ``steady_sps`` (epochs 1.., None when ``epochs == 1``), ``samples`` per epoch, ``epochs`` (median
        count read), ``repeats``, and, for workers > 0,
        ``first_ratio`` / ``steady_ratio``: samples/s over the workers=0 row's (needs 0 in ``workers``).
    """
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mmdata-workers-") as tmp:
        for corpus in corpora or sorted(SYNTHS):
            path = corpus_shards(corpus, Path(shards), Path(tmp))
            for batch_size in batch_sizes:
                runs: dict[int, list] = {w: [] for w in workers}
                for repeat in range(repeats):
                    shift = repeat % len(workers)  # rotate who goes first: no count always meets a warm cache
                    for w in [*workers[shift:], *workers[:shift]]:
                        runs[w].append(_epochs(path, batch_size, w, epochs, steady_s))
                rows += _with_ratios([_row(corpus, batch_size, w, runs[w]) for w in workers])
    return rows


def _with_ratios(rows: list[dict]) -> list[dict]:
    base = next((r for r in rows if r["workers"] == 0), None)
    for row in rows:
        if base is not None and row["workers"]:
            row["first_ratio"] = row["first_sps"] / base["first_sps"]
            row["steady_ratio"] = row["steady_sps"] / base["steady_sps"] if row["steady_sps"] else None
    return rows


def _table(rows: list[dict]) -> str:
    lines = [f"{'corpus':<14} {'batch':>5} {'rows':>5} {'workers':>7} {'first s/s':>10} {'steady s/s':>10} "
             f"{'first x0':>8} {'steady x0':>9}"]
    for r in rows:
        ratio = (f"{r['first_ratio']:8.2f} {r['steady_ratio'] or 0:9.2f}" if "first_ratio" in r
                 else f"{'':8} {'':9}")
        steady = f"{r['steady_sps']:10.0f}" if r["steady_sps"] else f"{'-':>10}"
        lines.append(f"{r['corpus']:<14} {r['batch_size']:>5} {r['samples']:>5} {r['workers']:>7} "
                     f"{r['first_sps']:10.0f} {steady} {ratio}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", choices=sorted(SYNTHS), default=None)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steady-s", type=float, default=0.3)
    parser.add_argument("--shards", type=Path, default=ROOT / "data" / "shards")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = measure(args.batch_sizes, args.workers, args.epochs, args.repeats, args.corpora, args.shards,
                   args.steady_s)
    print(_table(rows))
    steady = [r["steady_ratio"] for r in rows if r["workers"] == 2 and r.get("steady_ratio")]
    if steady:
        print(f"workers 2 vs 0, steady state: min {min(steady):.2f}, median {statistics.median(steady):.2f} "
              f"over {len(steady)} (corpus, batch) pairs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
