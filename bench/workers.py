"""Do DataLoader workers pay? ``mmdata.load`` samples/s with 0, 1 and 2 workers on every corpus mini.

For each corpus (train split, all fields) and batch size, one Loader per worker count reads ``epochs`` epochs
(``set_epoch`` between them, as a training loop does), more until the later ones took 0.3 s; the first epoch
(worker start-up included) and the later ones (steady state) are reported separately. The worker counts run interleaved, their order rotated
every repeat, and each figure is the median over repeats, so the ratio ``2 vs 0`` (workers=2 samples/s over
workers=0 samples/s, > 1: workers pay) compares runs taken side by side on the same loaded machine. Other jobs
on a shared machine take cores too: each repeat also runs two independent 0-worker Loaders at once, and their
summed samples/s over one's (``ceiling x0``) is the most any two-process split could gain at that moment.

    python bench/workers.py [--corpora avmnist mosi] [--batch-sizes 32 128] [--workers 0 1 2] [--epochs 3]
                            [--repeats 3] [--steady-s 0.3] [--ceiling-processes 2] [--shards data/shards]
                            [--json out.json]

The minis are read from ``data/shards/<corpus>`` (``dvc repro``); a missing one is synthesised and sharded into
a temporary directory with the settings of params.yaml.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

import mmdata
from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS

from common import settled

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
    return settled(out)


def _children_cpu() -> float:
    """CPU seconds used so far by this process's live children (the Loader's workers); 0 without /proc."""
    total = 0.0
    for child in multiprocessing.active_children():
        try:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _epochs(shards: Path, batch_size: int, workers: int, epochs: int, steady_s: float) -> list[tuple]:
    """(samples, seconds, main CPU s, workers' CPU s) of each epoch of one Loader (train split, all fields,
    shuffled): ``epochs`` epochs, more while the later ones took under ``steady_s`` in all (a mini's epoch can
    take 3 ms: one scheduler tick would decide the figure), at most 200."""
    loader = mmdata.load(shards, "train", batch_size=batch_size, num_workers=workers, seed=0)
    timings: list[tuple] = []
    try:
        while len(timings) < epochs or (sum(t[1] for t in timings[1:]) < steady_s and len(timings) < 200):
            loader.set_epoch(len(timings))
            start, cpu, children, samples = time.perf_counter(), time.process_time(), _children_cpu(), 0
            for batch in loader:
                samples += len(batch["__key__"])
            timings.append((samples, time.perf_counter() - start, time.process_time() - cpu,
                            _children_cpu() - children))
    finally:
        getattr(loader, "close", lambda: None)()  # older Loaders had no close(): their workers end per epoch
    return timings


def _independent(shards: Path, batch_size: int, epochs: int, steady_s: float, processes: int = 2) -> float:
    """Steady samples/s of ``processes`` independent 0-worker Loaders run at the same time, summed: what this
    machine's free cores allow any ``processes``-way split of the work right now (the parallel ceiling)."""
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        runs = pool.starmap(_epochs, [(shards, batch_size, 0, epochs, steady_s)] * processes)
    return sum(sum(t[0] for t in run[1:]) / sum(t[1] for t in run[1:]) for run in runs)


def _row(corpus: str, batch_size: int, workers: int, runs: list[list[tuple]]) -> dict:
    first = [run[0][0] / run[0][1] for run in runs]
    later = [run[1:] for run in runs if len(run) > 1]
    steady = [sum(t[0] for t in run) / sum(t[1] for t in run) for run in later]
    row = {"corpus": corpus, "batch_size": batch_size, "workers": workers, "samples": runs[0][0][0],
           "first_sps": statistics.median(first), "steady_sps": statistics.median(steady) if steady else None,
           "epochs": statistics.median(len(run) for run in runs), "repeats": len(runs)}
    if later:  # CPU microseconds per sample in the steady state, main process and workers apart
        for key, column in (("main_cpu_us", 2), ("workers_cpu_us", 3)):
            row[key] = statistics.median(1e6 * sum(t[column] for t in run) / sum(t[0] for t in run) for run in later)
    return row


def measure(batch_sizes: Sequence[int] = (32, 128), workers: Sequence[int] = (0, 2), epochs: int = 3,
            repeats: int = 3, corpora: Sequence[str] | None = None,
            shards: str | Path = ROOT / "data" / "shards", steady_s: float = 0.3,
            ceiling_processes: int = 2) -> list[dict]:
    """Samples/s per (corpus, batch size, workers), median of ``repeats`` interleaved runs.

    Each run reads at least ``epochs`` epochs and keeps going until its epochs after the first took
    ``steady_s`` seconds (at most 200 epochs). On a shared machine other jobs take cores too, so every repeat
    also runs ``ceiling_processes`` independent 0-worker Loaders at once (0: skip): their summed samples/s over
    the workers=0 row's is the most any split of the work over that many processes could gain at that moment.

    Returns:
        One row per (corpus, batch_size, workers): ``first_sps`` (epoch 0, worker start-up included),
        ``steady_sps`` (epochs 1.., None when ``epochs == 1``), ``samples`` per epoch, ``epochs`` (median
        count read), ``repeats``; for workers > 0 ``first_ratio`` / ``steady_ratio``: samples/s over the
        workers=0 row's (needs 0 in ``workers``); on the workers=0 row ``ceiling_sps`` and ``ceiling_ratio``
        (the independent processes' summed steady samples/s, and that over ``steady_sps``).
    """
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mmdata-workers-") as tmp:
        for corpus in corpora or sorted(SYNTHS):
            path = corpus_shards(corpus, Path(shards), Path(tmp))
            for batch_size in batch_sizes:
                runs: dict[int, list] = {w: [] for w in workers}
                ceiling = []
                for repeat in range(repeats):
                    shift = repeat % len(workers)  # rotate who goes first: no count always meets a warm cache
                    for w in [*workers[shift:], *workers[:shift]]:
                        runs[w].append(_epochs(path, batch_size, w, epochs, steady_s))
                    if ceiling_processes:
                        ceiling.append(_independent(path, batch_size, epochs, steady_s, ceiling_processes))
                batch_rows = _with_ratios([_row(corpus, batch_size, w, runs[w]) for w in workers])
                if ceiling and any(r["workers"] == 0 for r in batch_rows):
                    base = next(r for r in batch_rows if r["workers"] == 0)
                    base["ceiling_sps"] = statistics.median(ceiling)
                    base["ceiling_ratio"] = base["ceiling_sps"] / base["steady_sps"] if base["steady_sps"] else None
                rows += batch_rows
    return rows


def _with_ratios(rows: list[dict], cores: int = 2) -> list[dict]:
    """Ratios over the workers=0 row; ``free_cores_ratio``: the CPU per sample of workers=0 over the time per
    sample the workers' CPU would take on ``cores`` free cores (no core faster than one process, every process
    and the whole on ``cores``): what the worker count would reach if other jobs left the machine."""
    base = next((r for r in rows if r["workers"] == 0), None)
    for row in rows:
        if base is not None and row["workers"]:
            row["first_ratio"] = row["first_sps"] / base["first_sps"]
            row["steady_ratio"] = row["steady_sps"] / base["steady_sps"] if row["steady_sps"] else None
            if row.get("workers_cpu_us") and base.get("main_cpu_us"):
                total = row["main_cpu_us"] + row["workers_cpu_us"]
                bound = max(total / cores, row["main_cpu_us"], row["workers_cpu_us"] / row["workers"])
                row["free_cores_ratio"] = base["main_cpu_us"] / bound
    return rows


def _table(rows: list[dict]) -> str:
    lines = [f"{'corpus':<14} {'batch':>5} {'rows':>5} {'workers':>7} {'first s/s':>10} {'steady s/s':>10} "
             f"{'first x0':>8} {'steady x0':>9} {'free cores x0':>13} {'cpu us/sample':>13}"]
    for r in rows:
        ratio = (f"{r['first_ratio']:8.2f} {r['steady_ratio'] or 0:9.2f}" if "first_ratio" in r
                 else f"{'':8} {'':9}")
        steady = f"{r['steady_sps']:10.0f}" if r["steady_sps"] else f"{'-':>10}"
        free = (f"{r['free_cores_ratio']:13.2f}" if r.get("free_cores_ratio") else
                f"{'ceiling ' + format(r['ceiling_ratio'], '.2f'):>13}" if r.get("ceiling_ratio") else f"{'':13}")
        cpu = (f"{r['main_cpu_us']:6.0f}+{r['workers_cpu_us']:<6.0f}" if "main_cpu_us" in r else "")
        lines.append(f"{r['corpus']:<14} {r['batch_size']:>5} {r['samples']:>5} {r['workers']:>7} "
                     f"{r['first_sps']:10.0f} {steady} {ratio} {free} {cpu}")
    return "\n".join(lines)


def _summary(rows: list[dict]) -> str:
    """Min and median of the steady 2-vs-0 ratio, and of the 2-process ceiling at the time."""
    two = [r for r in rows if r["workers"] == 2 and r.get("steady_ratio")]
    if not two:
        return ""
    line = (f"workers 2 vs 0, steady state: min {min(r['steady_ratio'] for r in two):.2f}, median "
            f"{statistics.median(r['steady_ratio'] for r in two):.2f} over {len(two)} (corpus, batch) pairs")
    free = [r["free_cores_ratio"] for r in two if r.get("free_cores_ratio")]
    if free:
        line += (f"; projected on 2 free cores from CPU time: min {min(free):.2f}, median "
                 f"{statistics.median(free):.2f}")
    ceilings = [r["ceiling_ratio"] for r in rows if r.get("ceiling_ratio")]
    if ceilings:
        line += (f"; two independent 0-worker processes at the same time (the machine's parallel ceiling): "
                 f"min {min(ceilings):.2f}, median {statistics.median(ceilings):.2f}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", choices=sorted(SYNTHS), default=None)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steady-s", type=float, default=0.3)
    parser.add_argument("--ceiling-processes", type=int, default=2, help="0: skip the parallel ceiling")
    parser.add_argument("--shards", type=Path, default=ROOT / "data" / "shards")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = measure(args.batch_sizes, args.workers, args.epochs, args.repeats, args.corpora, args.shards,
                   args.steady_s, args.ceiling_processes)
    print(_table(rows))
    print(_summary(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
