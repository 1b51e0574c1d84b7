"""Writing speed: ``write_split`` with 1 and N processes against the encode ceiling, side by side (issue 14.3).

The corpus is AV-MNIST-like (an image [28, 28] float32 .npy, a spectrogram [112, 112] uint8 .npy and a class
label per sample) generated in memory, so the source reader's cost is left out. Per repeat, interleaved:

- ``encode_ceiling``: every payload encoded with :func:`mmdata.shards.codec.encode` in a tight loop (one core);
- ``write_split`` with each process count: admission, encode, audit, tar, crc32, sha256, the post-write header
  check, index and manifest, publish.

Printed per process count: samples/s (median), the ratio to the ceiling per core (``samples/s / processes /
ceiling``), the speedup over 1 process, and whether every output file is byte-identical to the 1-process one.

    python bench/write_speed.py [--samples 12000] [--repeats 3] [--processes 1 2]
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmdata.corpora.avmnist import FEATURES
from mmdata.shards.codec import encode
from mmdata.shards.write import write_split


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


def _write(items: list[dict], out: Path, processes: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    write_split(items, FEATURES, out, corpus="avmnist", split="train", max_samples=250, processes=processes)
    return time.perf_counter() - start


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def measure(samples: int = 12000, processes: Sequence[int] = (1, 2), repeats: int = 3) -> list[dict]:
    """Rows (dicts) of the encode ceiling and of write_split per process count; medians of interleaved repeats."""
    items = avmnist_like(samples)
    times: dict[object, list[float]] = {"ceiling": [], **{p: [] for p in processes}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            times["ceiling"].append(_encode_all(items))
            for count in processes:
                times[count].append(_write(items, Path(tmp) / f"p{count}" / "train", count))
        reference = _digests(Path(tmp) / f"p{processes[0]}" / "train")
        identical = {p: _digests(Path(tmp) / f"p{p}" / "train") == reference for p in processes}
    ceiling = samples / statistics.median(times["ceiling"])
    base = samples / statistics.median(times[processes[0]])
    rows = [{"bench": "write", "corpus": "avmnist-like", "samples": samples, "what": "encode_ceiling",
             "processes": 1, "samples_per_s": ceiling}]
    for count in processes:
        rate = samples / statistics.median(times[count])
        rows.append({"bench": "write", "corpus": "avmnist-like", "samples": samples, "what": "write_split",
                     "processes": count, "samples_per_s": rate, "ratio_to_ceiling_per_core": rate / count / ceiling,
                     f"speedup_vs_{processes[0]}": rate / base, "identical": identical[count]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    for row in measure(args.samples, tuple(args.processes), args.repeats):
        extra = "" if row["what"] == "encode_ceiling" else (
            f"  ratio/core {row['ratio_to_ceiling_per_core']:.2f}  speedup {row[f'speedup_vs_{args.processes[0]}']:.2f}x"
            f"  identical {row['identical']}")
        print(f"{row['what']:15s} processes {row['processes']}  {row['samples_per_s']:9.0f} samples/s{extra}")


if __name__ == "__main__":
    main()
