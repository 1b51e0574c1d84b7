"""Writing speed: ``write_split`` with 1 and N processes against the encode ceiling, side by side (issue 14.3).

The corpus is AV-MNIST-like (an image [28, 28] float32 .npy, a spectrogram [112, 112] uint8 .npy and a class
label per sample) generated in memory, so the source reader's cost is left out. Per repeat, interleaved:

- ``encode_ceiling``: every payload encoded with :func:`mmdata.shards.codec.encode` in a tight loop (one core);
- ``checked_ceiling``: the encode ceiling plus what the writer's guarantees cost at the least, each payload
  encoded, its crc32 (the index's) and the sha256 of its bytes twice (the shard digest of the manifest and the
  content digest of the duplicate report) in a tight loop: no writer that keeps those checks goes faster on one
  core;
- ``np_save_ceiling``: the old ceiling, every payload through ``np.save`` into a BytesIO (what the encoder did
  before its cached header; the issue's "0.15 of the encode ceiling" was measured against it);
- ``write_split`` with each process count (their order alternates from repeat to repeat, so a burst of load from
  the machine's other users falls on each count alike): admission, encode, audit, tar, crc32, sha256, the
  post-write header check, index and manifest, publish;
- ``independent_parts`` (each process count above 1): the samples cut into that many contiguous parts, each
  written by its own 1-process ``write_split`` in its own forked process, all at once: what this machine gives
  N processes that share nothing (no driver, no handoff, no merge; each still forks, fsyncs to the one disk and
  writes its own index), the ceiling an engine's speedup is read against;
- ``shard_corpus`` (with ``--release N``): a synthetic AV-MNIST release on disk (real layout: six .npy files,
  ``N`` train + ``N // 10`` test rows) sharded whole with each process count, interleaved: the reader, the
  raw-file fingerprint and every split's index and manifest included. With several processes the workers read
  their own parts of the .npy files (:mod:`mmdata.shards.localtasks`), as Ray's workers would.

Printed per process count: samples/s (median), the ratios to both ceilings per core (``samples/s / processes /
ceiling``), the speedup over 1 process, and whether every output file is byte-identical to the 1-process one;
first, the machine's CPU count and load average at the start (others' work on a shared machine skews speedups),
and per process count the CPU time of all its processes per sample (what the processes would cost on free cores).

    python bench/write_speed.py [--samples 12000] [--repeats 3] [--processes 1 2] [--release 10000]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmdata.corpora.avmnist import FEATURES
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode
from mmdata.shards.write import write_split
from mmdata.synth import SYNTHS


def avmnist_like(samples: int, seed: int = 0) -> list[dict]:
    """``samples`` AV-MNIST-like samples (random content, the real shapes and dtypes)."""
    rng = np.random.default_rng(seed)
    return [{"__key__": f"avmnist/train/{i:06d}", "image": rng.random((28, 28), dtype=np.float32),
             "audio_spec": rng.integers(0, 256, (112, 112), dtype=np.uint8), "label": np.int64(i % 10)}
            for i in range(samples)]


def _encode_all(items: list[dict]) -> float:
    names = sorted(FEATURES)
    start = time.perf_counter()
    for sample in items:
        for name in names:
            encode(sample[name], FEATURES[name])
    return time.perf_counter() - start


def _checked_all(items: list[dict]) -> float:
    names = sorted(FEATURES)
    content_names = [n for n in names if n != "label"]  # the duplicate report's digest leaves labels out
    shard = hashlib.sha256()
    start = time.perf_counter()
    for sample in items:
        content = hashlib.sha256()
        for name in names:
            data = encode(sample[name], FEATURES[name])
            zlib.crc32(data)
            shard.update(data)
            if name in content_names:
                content.update(data)
        content.digest()
    shard.digest()
    return time.perf_counter() - start


def _np_save_all(items: list[dict]) -> float:
    names = [n for n in sorted(FEATURES) if FEATURES[n].codec == "npy"]
    start = time.perf_counter()
    for sample in items:
        for name in names:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(sample[name]), allow_pickle=False)
            buffer.getvalue()
    return time.perf_counter() - start


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the writer's workers) so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _write(items: list[dict], out: Path, processes: int, cpu: list[float] | None = None) -> float:
    """Wall seconds of one write_split; its CPU seconds (all processes) appended to ``cpu``."""
    shutil.rmtree(out, ignore_errors=True)
    start, used = time.perf_counter(), _cpu()
    write_split(items, FEATURES, out, corpus="avmnist", split="train", max_samples=250, processes=processes)
    if cpu is not None:
        cpu.append(_cpu() - used)
    return time.perf_counter() - start


def _parts(items: list[dict], out: Path, processes: int) -> float:
    """Wall seconds of ``processes`` 1-process write_splits of contiguous parts of ``items``, run at once."""
    import multiprocessing

    context, step = multiprocessing.get_context("fork"), -(-len(items) // processes)
    for k in range(processes):
        shutil.rmtree(out / f"part{k}", ignore_errors=True)
    start = time.perf_counter()
    children = [context.Process(target=_write, args=(items[k * step:(k + 1) * step], out / f"part{k}", 1))
                for k in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    if any(child.exitcode for child in children):
        raise RuntimeError(f"an independent part's write failed: exit codes {[c.exitcode for c in children]}")
    return time.perf_counter() - start


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _times(items: list[dict], processes: Sequence[int], repeats: int, tmp: Path) -> dict[object, list[float]]:
    """Seconds per repeat of each measurement; the write order alternates (1, 2 then 2, 1 ...)."""
    times: dict[object, list[float]] = {"encode_ceiling": [], "checked_ceiling": [], "np_save_ceiling": [],
                                        **{p: [] for p in processes},
                                        **{f"cpu{p}": [] for p in processes}}
    for repeat in range(repeats):
        times["encode_ceiling"].append(_encode_all(items))
        times["checked_ceiling"].append(_checked_all(items))
        times["np_save_ceiling"].append(_np_save_all(items))
        for count in (processes if repeat % 2 == 0 else processes[::-1]):
            times[count].append(_write(items, tmp / f"p{count}" / "train", count, times[f"cpu{count}"]))
            if count > 1:
                times.setdefault(f"parts{count}", []).append(_parts(items, tmp / f"parts{count}", count))
    return times


def measure(samples: int = 12000, processes: Sequence[int] = (1, 2), repeats: int = 3) -> list[dict]:
    """Rows (dicts) of both ceilings and of write_split per process count; medians of interleaved repeats."""
    load = os.getloadavg()[0]
    items = avmnist_like(samples)
    with tempfile.TemporaryDirectory() as tmp:
        times = _times(items, processes, repeats, Path(tmp))
        reference = _digests(Path(tmp) / f"p{processes[0]}" / "train")
        identical = {p: _digests(Path(tmp) / f"p{p}" / "train") == reference for p in processes}
    common = {"bench": "write", "corpus": "avmnist-like", "samples": samples, "repeats": repeats,
              "cpus": os.cpu_count(), "load_average_at_start": load}
    rate = {k: samples / statistics.median(v) for k, v in times.items()}
    rows = [{**common, "what": what, "processes": 1, "samples_per_s": rate[what]}
            for what in ("encode_ceiling", "checked_ceiling", "np_save_ceiling")]
    for count in processes:
        rows.append({**common, "what": "write_split", "processes": count, "samples_per_s": rate[count],
                     "ratio_to_ceiling_per_core": rate[count] / count / rate["encode_ceiling"],
                     "ratio_to_checked_ceiling_per_core": rate[count] / count / rate["checked_ceiling"],
                     "ratio_to_np_save_ceiling_per_core": rate[count] / count / rate["np_save_ceiling"],
                     f"speedup_vs_{processes[0]}": rate[count] / rate[processes[0]], "identical": identical[count],
                     # CPU of all processes per sample: with free cores, speedup ~ processes * cpu(1) / cpu(N)
                     "cpu_us_per_sample": 1e6 * statistics.median(times[f"cpu{count}"]) / samples})
        if count > 1:
            rows.append({**common, "what": "independent_parts", "processes": count,
                         "samples_per_s": rate[f"parts{count}"],
                         f"speedup_vs_{processes[0]}": rate[f"parts{count}"] / rate[processes[0]]})
    return rows


def _shard(root: Path, out: Path, processes: int) -> tuple[float, int]:
    """Wall seconds of one whole-release shard run, and the raw items it read."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifests = shard_corpus("avmnist", root, out, max_samples=250, progress=False, processes=processes)
    return time.perf_counter() - start, sum(m["report"]["raw"] for m in manifests.values())


def _tree(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def measure_release(train: int = 10000, processes: Sequence[int] = (1, 2), repeats: int = 3) -> list[dict]:
    """Rows of ``shard_corpus`` on a synthetic AV-MNIST release per process count (medians of interleaved
    repeats, each after one untimed run that fills the page cache)."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = SYNTHS["avmnist"](Path(tmp) / "raw", train=train, test=max(1, train // 10))
        seconds: dict[int, list[float]] = {p: [] for p in processes}
        raw = 0
        for count in processes:
            _shard(root, Path(tmp) / f"p{count}" / "avmnist", count)
        for repeat in range(repeats):
            for count in (processes if repeat % 2 == 0 else processes[::-1]):
                wall, raw = _shard(root, Path(tmp) / f"p{count}" / "avmnist", count)
                seconds[count].append(wall)
        reference = _tree(Path(tmp) / f"p{processes[0]}" / "avmnist")
        identical = {p: _tree(Path(tmp) / f"p{p}" / "avmnist") == reference for p in processes}
    rate = {p: raw / statistics.median(seconds[p]) for p in processes}
    return [{"bench": "write", "what": "shard_corpus", "corpus": "avmnist release", "samples": raw,
             "repeats": repeats, "cpus": os.cpu_count(), "load_average_at_start": load, "processes": p,
             "samples_per_s": rate[p], f"speedup_vs_{processes[0]}": rate[p] / rate[processes[0]],
             "identical": identical[p]} for p in processes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--release", type=int, default=0, help="also shard an AV-MNIST release of N train rows")
    args = parser.parse_args(argv)
    rows = measure(args.samples, tuple(args.processes), args.repeats)
    if args.release:
        rows += measure_release(args.release, tuple(args.processes), args.repeats)
    print(f"{rows[0]['cpus']} CPUs, load average {rows[0]['load_average_at_start']:.2f} at start; "
          f"{args.samples} samples, medians of {args.repeats} interleaved repeats")
    for row in rows:
        if row["what"] == "independent_parts":
            print(f"{'parts at once':15s} processes {row['processes']}  {row['samples_per_s']:9.0f} samples/s  "
                  f"speedup {row[f'speedup_vs_{args.processes[0]}']:.2f}x (the machine's ceiling for the engine)")
            continue
        if row["what"] == "shard_corpus":
            print(f"{'shard_corpus':15s} processes {row['processes']}  {row['samples_per_s']:9.0f} samples/s  "
                  f"speedup {row[f'speedup_vs_{args.processes[0]}']:.2f}x  identical {row['identical']}  "
                  f"({row['samples']} raw items of a synthetic AV-MNIST release)")
            continue
        extra = "" if row["what"] != "write_split" else (
            f"  ratio/core: encode {row['ratio_to_ceiling_per_core']:.3f}, "
            f"checked {row['ratio_to_checked_ceiling_per_core']:.2f}, np.save "
            f"{row['ratio_to_np_save_ceiling_per_core']:.2f}  speedup {row[f'speedup_vs_{args.processes[0]}']:.2f}x"
            f"  cpu {row['cpu_us_per_sample']:.0f} us/sample  identical {row['identical']}")
        print(f"{row['what']:15s} processes {row['processes']}  {row['samples_per_s']:9.0f} samples/s{extra}")


if __name__ == "__main__":
    main()
