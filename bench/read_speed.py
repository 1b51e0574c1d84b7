#!/usr/bin/env python
"""Read speed: ``mmdata.load`` over shards against reading the raw layout the way MultiBench's loaders do.

Everything is measured side by side in one run, on synthetic minis generated into a temporary directory
(``mmdata.synth``) and sharded with ``mmdata.shards.build.shard_corpus``:

- AV-MNIST raw baseline (behaviour of MultiBench ``datasets/avmnist/get_data.py`` get_dataloader, our own
  code): ``np.load`` the whole train arrays, divide image and audio by 255 (float64), reshape to
  ``[N, 1, 28, 28]`` / ``[N, 1, 112, 112]``, labels to int, a Python list of per-sample lists over the train
  rows (all but the last ``n // 12``), ``DataLoader(batch_size, shuffle=True, num_workers)`` with the default
  collate. Shards: ``mmdata.load(fields=image, audio_spec, label)``.
- MOSI raw baseline (behaviour of MultiBench ``datasets/affect/get_data.py``): ``pickle.load`` the MulT
  ``mosi_data.pkl``, drop clips whose text is all zeros, audio ``-inf`` -> 0, per-sample tensors trimmed at
  the first non-zero text step, a collate that pads each batch (``pad_sequence``) and returns lengths.
  Shards (built from the same pickle): ``mmdata.load(fields=feat_text, feat_audio, feat_vision, label)``.

Timings (``time.perf_counter``; the median of ``--repeats`` runs is reported):

- cold: from nothing in memory (before ``np.load`` / ``pickle.load`` / ``mmdata.load``) to the end of the
  first epoch; it includes DataLoader worker start-up. The files were just written, so they sit in the OS
  page cache for both paths: "cold" is a cold process state, not a cold disk.
- warm: a second epoch on the same loader object (new shuffle); workers are started again per epoch in both
  paths (``persistent_workers`` off, as in MultiBench).
- torch gets 1 intra-op thread in the main process (``--threads``): on a shared 2-core machine, 2-thread
  OpenMP ops showed multi-millisecond tails that swamped the readers; DataLoader workers use 1 thread anyway.

Both paths use the same batch size, the same samples (train split, ``drop_last=False``) and the same fields,
and every batch is consumed: ``--consume sum`` (default) sums every field as delivered, so each byte of each
batch is read; ``--consume model`` first converts to the float32 model input (what MultiBench's training loop
does with ``.float()``; the shard side also scales AV-MNIST's uint8 audio by 1/255, which MultiBench did up
front and pays in "cold"). The epoch sums of both paths are compared, so a path that skipped or duplicated
samples is reported. Differences that remain, by design of each path: MultiBench's AV-MNIST audio is float64
in RAM and in every batch (8x the bytes of our uint8), and its MOSI batches are trimmed and padded per batch
while the shards return the released 50 steps.

Run: ``python bench/read_speed.py`` (both corpora, about 1-2 minutes on 2 cores); ``--help`` for options.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import mmdata  # noqa: E402
from mmdata.modalities import safe_pickle  # noqa: E402
from mmdata.corpora import get_corpus  # noqa: E402
from mmdata.shards.build import shard_corpus  # noqa: E402
from mmdata.shards.codec import decode  # noqa: E402
from mmdata.shards.collate import collate  # noqa: E402
from mmdata.shards.read import SplitShards  # noqa: E402
from mmdata.synth import SYNTHS  # noqa: E402

Sums = np.ndarray  # per-field running sums of one epoch, float64


# --------------------------------------------------------------------------------------------- AV-MNIST


def avmnist_raw(root: Path, batch_size: int, workers: int) -> tuple[DataLoader, int]:
    """MultiBench-style AV-MNIST train loader over the raw arrays; returns it and the bytes it holds in RAM."""
    image = np.load(root / "image" / "train_data.npy")
    audio = np.load(root / "audio" / "train_data.npy")
    labels = np.load(root / "train_labels.npy")
    n = len(labels)
    if image.dtype.kind == "f":
        image /= 255.0  # in place, as MultiBench does for the float image array
    else:
        image = image / 255.0
    audio = audio / 255.0  # a new float64 array
    image = image.reshape(n, 1, 28, 28)
    audio = audio.reshape(n, 1, 112, 112)
    labels = labels.astype(int)
    rows = n - n // 12  # MultiBench: train = first 55,000 of 60,000, valid = the rest
    items = [[image[i], audio[i], labels[i]] for i in range(rows)]
    held = image.nbytes + audio.nbytes + labels.nbytes
    return DataLoader(items, batch_size=batch_size, shuffle=True, num_workers=workers), held


def _sum(tensor: torch.Tensor) -> float:
    """Sum of every element, read through numpy (single-threaded: see ``--threads``)."""
    return float(tensor.numpy().sum())


def avmnist_consume_raw(batch: list[torch.Tensor], model: bool) -> Sums:
    image, audio, label = batch
    if model:  # what MultiBench's training loop feeds the model: float32
        image, audio = image.float(), audio.float()
    return np.array([_sum(image), _sum(audio), _sum(label)])


def avmnist_consume_shards(batch: dict[str, Any], model: bool) -> Sums:
    image, audio = batch["image"], batch["audio_spec"]
    if model:  # the same float32 [B, 1, H, W] values MultiBench feeds (uint8 audio scaled to 0..1)
        image, audio = image.float().unsqueeze(1), audio.float().div_(255.0).unsqueeze(1)
        return np.array([_sum(image), _sum(audio), _sum(batch["label"])])
    # Summed as delivered (uint8 audio); the scalar is scaled so the check can compare it with the raw path.
    return np.array([_sum(image), _sum(audio) / 255.0, _sum(batch["label"])])


# --------------------------------------------------------------------------------------------- MOSI


class _AffectStyle(Dataset):
    """Per-sample tensors as MultiBench's affect loader builds them (aligned data, no max_pad)."""

    def __init__(self, split: dict[str, np.ndarray]) -> None:
        self.split = split
        audio = split["audio"]
        audio[audio == -np.inf] = 0.0

    def __len__(self) -> int:
        return len(self.split["vision"])

    def __getitem__(self, i: int) -> list[Any]:
        vision = torch.tensor(self.split["vision"][i])
        audio = torch.tensor(self.split["audio"][i])
        text = torch.tensor(self.split["text"][i])
        start = int(text.nonzero()[0][0])  # drop the left zero padding of the aligned sequences
        label = torch.tensor(self.split["labels"][i]).float()
        return [vision[start:].float(), audio[start:].float(), text[start:].float(), i, label]


def _pad_batch(samples: list[list[Any]]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor,
                                                   torch.Tensor]:
    """Pad each modality to the batch's longest clip; lengths, sample indices and labels alongside."""
    features = [pad_sequence([s[m] for s in samples], batch_first=True) for m in range(3)]
    lengths = [torch.as_tensor([s[m].shape[0] for s in samples]) for m in range(3)]
    indices = torch.tensor([s[3] for s in samples]).view(-1, 1)
    labels = torch.stack([s[4].reshape(()) for s in samples]).view(-1, 1)
    return features, lengths, indices, labels


def _drop_empty_text(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MultiBench's drop_entry: remove clips whose text features are all zero, from every array."""
    drop = np.flatnonzero(split["text"].reshape(len(split["text"]), -1).sum(axis=1) == 0)
    return {k: np.delete(v, drop, 0) for k, v in split.items()} if len(drop) else split


def mosi_raw(root: Path, batch_size: int, workers: int) -> tuple[DataLoader, int]:
    """MultiBench-style MOSI train loader over the MulT pickle; returns it and the bytes it holds in RAM."""
    # MultiBench calls pickle.load; the restricted unpickler reads the same bytes at the same speed (it only
    # checks the few globals the file names) and cannot run code from a file pointed at by --root.
    data = safe_pickle.load(root / "mosi_data.pkl")
    data = {split: _drop_empty_text(arrays) for split, arrays in data.items()}
    held = sum(a.nbytes for arrays in data.values() for a in arrays.values())
    return DataLoader(_AffectStyle(data["train"]), batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=_pad_batch), held


def mosi_consume_raw(batch: tuple, model: bool) -> Sums:
    (vision, audio, text), _, _, labels = batch  # float32 already, as a model takes them
    return np.array([_sum(text), _sum(audio), _sum(vision), _sum(labels)])


def mosi_consume_shards(batch: dict[str, Any], model: bool) -> Sums:
    return np.array([_sum(batch[k]) for k in ("feat_text", "feat_audio", "feat_vision", "label")])


# --------------------------------------------------------------------------------------------- registry


@dataclass
class Bench:
    """One corpus: how to make its mini, the baseline, the shard fields and the batch consumers."""

    name: str
    default_samples: int
    sizes: Callable[[int], dict[str, int]]  # --samples -> synth keyword sizes
    raw_root: Callable[[Path], Path]  # synth root -> what the baseline reads
    raw_loader: Callable[[Path, int, int], tuple[DataLoader, int]]
    consume_raw: Callable[[Any, bool], Sums]  # (batch, model) -> per-field sums
    fields: tuple[str, ...]
    consume_shards: Callable[[dict[str, Any], bool], Sums]
    reader: dict[str, Any] = field(default_factory=dict)


BENCHES = {
    "avmnist": Bench(
        name="avmnist", default_samples=6000, sizes=lambda n: {"train": n, "test": 12},
        raw_root=lambda root: root, raw_loader=avmnist_raw, consume_raw=avmnist_consume_raw,
        fields=("image", "audio_spec", "label"), consume_shards=avmnist_consume_shards),
    "mosi": Bench(
        name="mosi", default_samples=2500, sizes=lambda n: {"train": n, "valid": 4, "test": 4},
        raw_root=lambda root: root, raw_loader=mosi_raw, consume_raw=mosi_consume_raw,
        fields=("feat_text", "feat_audio", "feat_vision", "label"), consume_shards=mosi_consume_shards,
        reader={"release": "mult", "variant": "aligned"}),
}


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class Run:
    cold_s: float
    warm_s: float
    samples: int
    batches: int
    sums: Sums
    held_bytes: int = 0


def _epoch(batches: Iterable[Any], consume: Callable[[Any, bool], Sums], model: bool) -> tuple[int, int, Sums]:
    count = n_batches = 0
    total: Sums | None = None
    for batch in batches:
        sums = consume(batch, model)
        total = sums if total is None else total + sums
        n_batches += 1
        count += _batch_len(batch)
    return count, n_batches, total if total is not None else np.zeros(0)


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(batch["__key__"])
    if isinstance(batch, tuple):  # MOSI raw: (features, lengths, indices, labels)
        return len(batch[3])
    return len(batch[-1])  # AV-MNIST raw: [image, audio, label]


def measure_raw(bench: Bench, root: Path, batch_size: int, workers: int, model: bool) -> Run:
    gc.collect()
    start = time.perf_counter()
    loader, held = bench.raw_loader(bench.raw_root(root), batch_size, workers)
    samples, batches, sums = _epoch(loader, bench.consume_raw, model)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    _epoch(loader, bench.consume_raw, model)
    warm = time.perf_counter() - start
    del loader
    return Run(cold, warm, samples, batches, sums, held)


def measure_shards(bench: Bench, shards: Path, batch_size: int, workers: int, model: bool) -> Run:
    gc.collect()
    start = time.perf_counter()
    loader = mmdata.load(shards, "train", fields=list(bench.fields), batch_size=batch_size, shuffle=True,
                         num_workers=workers)
    samples, batches, sums = _epoch(loader, bench.consume_shards, model)
    cold = time.perf_counter() - start
    loader.set_epoch(1)
    start = time.perf_counter()
    _epoch(loader, bench.consume_shards, model)
    warm = time.perf_counter() - start
    return Run(cold, warm, samples, batches, sums)


def decode_ceiling(split_dir: Path, fields: tuple[str, ...], batch_size: int) -> tuple[float, float, int]:
    """Samples/s of decoding every requested member from shard bytes already in memory (no I/O, no checks),
    and of decode + ``mmdata.shards.collate.collate`` into batches; and the number of samples."""
    shards = SplitShards.open(split_dir)
    blobs = {rec["name"]: memoryview((split_dir / rec["name"]).read_bytes()) for rec in shards.manifest["shards"]}
    index = shards.index
    n = len(index["key"])
    where = [(blobs[s], k) for s, k in zip(index["shard"].tolist(), index["key"].tolist())]
    spans = {f: list(zip(index[f"offset_{f}"].tolist(), index[f"size_{f}"].tolist())) for f in fields}
    specs = {f: shards.features[f] for f in fields}

    def samples() -> Iterable[dict[str, Any]]:
        for row, (blob, key) in enumerate(where):
            sample = {"__key__": key}
            for f in fields:
                offset, size = spans[f][row]
                sample[f] = decode(blob[offset:offset + size], specs[f])
            yield sample

    def decode_all() -> None:
        for _ in samples():
            pass

    def decode_collate_all() -> None:
        pending: list[dict[str, Any]] = []
        for sample in samples():
            pending.append(sample)
            if len(pending) == batch_size:
                collate(pending, shards.features, fields)
                pending = []
        if pending:
            collate(pending, shards.features, fields)

    def best_rate(fn: Callable[[], None]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return n / min(times)

    return best_rate(decode_all), best_rate(decode_collate_all), n


def disk_bytes(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


def profile_shards(bench: Bench, shards: Path, batch_size: int, top: int, model: bool) -> None:
    """cProfile one warm epoch of the shard path in this process (workers=0)."""
    loader = mmdata.load(shards, "train", fields=list(bench.fields), batch_size=batch_size, num_workers=0)
    _epoch(loader, bench.consume_shards, model)  # warm caches
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    _, batches, _ = _epoch(loader, bench.consume_shards, model)
    profiler.disable()
    elapsed = time.perf_counter() - start
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile, {bench.name} shards, workers=0, one epoch of {batches} batches: {elapsed:.2f} s "
          f"under the profiler ({1e3 * elapsed / batches:.2f} ms/batch) ---")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


# --------------------------------------------------------------------------------------------- main


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def run_corpus(bench: Bench, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    samples = args.samples or bench.default_samples
    raw, shards = work / bench.name / "raw", work / bench.name / "shards"
    start = time.perf_counter()
    root = SYNTHS[bench.name](raw, seed=0, **bench.sizes(samples))
    made = time.perf_counter() - start
    start = time.perf_counter()
    shard_corpus(bench.name, root, shards, reader=bench.reader, progress=False)
    sharded = time.perf_counter() - start
    corpus = get_corpus(bench.name)
    raw_bytes = disk_bytes(corpus.sources(root, **bench.reader))
    shard_bytes, train_bytes = disk_bytes([shards]), disk_bytes([shards / "train"])
    print(f"\n== {bench.name}: synthetic mini ({samples} source rows) made in {made:.1f} s, sharded in "
          f"{sharded:.1f} s; on disk: raw {_fmt_bytes(raw_bytes)} (files the corpus reader reads), shards "
          f"{_fmt_bytes(shard_bytes)} (all splits; train {_fmt_bytes(train_bytes)}), "
          f"ratio {shard_bytes / raw_bytes:.2f}")

    runs: dict[tuple[str, int], list[Run]] = {}
    for repeat in range(args.repeats):
        for workers in args.workers:
            order = ("raw", "shards") if repeat % 2 == 0 else ("shards", "raw")  # alternate to cancel drift
            for path in order:
                model = args.consume == "model"
                run = (measure_raw(bench, root, args.batch_size, workers, model) if path == "raw"
                       else measure_shards(bench, shards, args.batch_size, workers, model))
                runs.setdefault((path, workers), []).append(run)
                print(f"   repeat {repeat + 1}/{args.repeats} {path:6s} workers={workers}: cold {run.cold_s:.2f} s, "
                      f"warm {run.warm_s:.2f} s ({run.samples} samples, {run.batches} batches)", flush=True)

    # Same samples and values on both paths: counts and epoch sums must agree.
    ref = runs[("raw", args.workers[0])][0]
    for (path, workers), group in runs.items():
        for run in group:
            if run.samples != ref.samples or not np.allclose(run.sums, ref.sums, rtol=1e-4, atol=1e-3):
                print(f"   WARNING: {path} workers={workers} read {run.samples} samples with sums {run.sums}; "
                      f"raw read {ref.samples} with sums {ref.sums}")

    rows = []
    for workers in args.workers:
        med = {path: (statistics.median(r.cold_s for r in runs[(path, workers)]),
                      statistics.median(r.warm_s for r in runs[(path, workers)])) for path in ("raw", "shards")}
        for path in ("raw", "shards"):
            cold, warm = med[path]
            n = runs[(path, workers)][0].samples
            rows.append({"corpus": bench.name, "path": path, "workers": workers, "samples": n,
                         "cold_s": cold, "cold_rate": n / cold, "warm_s": warm, "warm_rate": n / warm,
                         "warm_best": n / min(r.warm_s for r in runs[(path, workers)]),
                         "cold_ratio": med["raw"][0] / cold if path == "shards" else None,
                         "warm_ratio": med["raw"][1] / warm if path == "shards" else None,
                         "held": runs[(path, workers)][0].held_bytes})

    decode_rate, collate_rate, n = decode_ceiling(shards / "train", bench.fields, args.batch_size)
    rows.append({"corpus": bench.name, "ceiling": (decode_rate, collate_rate, n)})
    if args.profile:
        profile_shards(bench, shards, args.batch_size, args.profile, args.consume == "model")
    return rows


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nRead speed, batch size {args.batch_size}, median of {args.repeats} repeats, consume={args.consume}; "
          f"samples/s = samples of one train epoch / seconds.\ncold = load/open + first epoch; warm = a second "
          f"epoch on the same loader. ratio = shards samples/s / raw samples/s of the medians (>1: shards "
          f"faster); best warm/s = the fastest repeat.")
    header = (f"{'corpus':8s} {'path':6s} {'workers':>7s} {'samples':>7s} {'cold s':>7s} {'cold/s':>8s} "
              f"{'warm s':>7s} {'warm/s':>8s} {'best warm/s':>11s} {'ratio cold':>10s} {'ratio warm':>10s}  "
              f"{'raw in RAM':>10s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if "ceiling" in row:
            continue
        ratio = (lambda r: f"{r:10.2f}" if r is not None else f"{'':10s}")
        held = _fmt_bytes(row["held"]) if row["held"] else ""
        print(f"{row['corpus']:8s} {row['path']:6s} {row['workers']:7d} {row['samples']:7d} {row['cold_s']:7.2f} "
              f"{row['cold_rate']:8.0f} {row['warm_s']:7.2f} {row['warm_rate']:8.0f} {row['warm_best']:11.0f} "
              f"{ratio(row['cold_ratio'])} "
              f"{ratio(row['warm_ratio'])}  {held:>10s}")
    print("\nDecode ceiling (best of 3; one process, shard bytes already in memory, no I/O, no integrity checks):")
    for row in rows:
        if "ceiling" in row:
            decode_rate, collate_rate, n = row["ceiling"]
            print(f"  {row['corpus']:8s} decode only {decode_rate:9.0f} samples/s; decode + collate "
                  f"{collate_rate:9.0f} samples/s ({n} samples)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus", choices=[*BENCHES, "all"], default="all")
    parser.add_argument("--samples", type=int, default=None,
                        help="rows of the synthetic train source (default: avmnist 6000 -> 5500 train samples, "
                             "mosi 2500 (about twice the real MOSI train split of 1284))")
    parser.add_argument("--batch-size", type=int, default=40, help="MultiBench's AV-MNIST default")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    parser.add_argument("--consume", choices=("sum", "model"), default="sum",
                        help="per batch: sum every field as delivered, or first convert to the float32 model "
                             "input (AV-MNIST audio / 255 on the shard side) and sum that")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in the main process (0: leave torch's default). 1 because on "
                             "a 2-core machine shared with other work, 2-thread OpenMP ops (torch.stack in the "
                             "default collate, sums) show multi-ms tails that swamp the reader; DataLoader "
                             "workers run 1 thread anyway")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to write the minis and shards (default: a temporary directory, removed)")
    parser.add_argument("--profile", type=int, nargs="?", const=20, default=0, metavar="TOP",
                        help="also cProfile one warm shard epoch (workers=0) and print the TOP functions")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or any(w < 0 for w in args.workers):
        parser.error("--repeats and --batch-size must be >= 1 and --workers >= 0")
    names = list(BENCHES) if args.corpus == "all" else [args.corpus]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch thread(s) in the main process")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mmdata-bench-") as tmp:
        work = args.workdir or Path(tmp)
        for name in names:
            rows += run_corpus(BENCHES[name], work, args)
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
