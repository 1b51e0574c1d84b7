"""Augmentation cost per batch relative to loading the same batch from shards, per-sample vs batched forms.

Builds a synthetic AV-MNIST mini (2000 train samples, 250 per shard) and the Augmenter of its default policy
(``Augmenter.from_features``, ``text_in_image=True`` because a mirrored digit is another glyph: image rotate,
crop, jitter, noise; spectrogram shift, noise, time mask, frequency mask). Per batch, side by side in one run:

- load: ``mmdata.load`` without augmentation (random access + decode + collate, no workers);
- hook: the per-sample ``augmenter(sample, rng)`` on every decoded sample of that batch, plus collate: what
  the ``augment=`` hook adds to a worker's batch;
- load+hook: ``mmdata.load(augment=...)`` end to end (cross-check: about load + hook);
- batched: :func:`mmdata.augment.batched.augment_batch` on the collated batch (the same draws, torch
  kernels), split into its parameter draws and the rest; on the GPU as well when one is present (after
  transfer, synchronised).

Every cost is the median over all batches of all epochs; "x load" divides it by the median load time of the
same batch size. A throughput table then gives what a training step receives, in samples/s over whole epochs
(worker start-up included, as each epoch of a run pays it), side by side: the per-sample hook in the loader's
workers (``augment:``) vs :class:`~mmdata.augment.batched.DeviceAugmented` (``augment: {batched: true}``: the
workers only decode; each batch is moved to the device and augmented there), on the CPU and on the GPU when
one is present. A second table repeats hook vs batched on larger in-memory inputs (NYUv2-like RGB, depth and
normals at 240 x 320, no shards), where resampling dominates. Each batched result is checked against the
per-sample one (max abs difference printed).

    python bench/augment.py [--batch-sizes 32 128] [--epochs 2] [--workers 0 2] [--large-batch 16] [--threads 1]
                            [--workdir DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import mmdata
from common import avmnist_shards, timed
from mmdata.augment import Augmenter
from mmdata.augment.batched import DeviceAugmented, augment_batch, loader_rngs
from mmdata.rng import make_rng
from mmdata.shards.collate import collate
from mmdata.types import Field

DEVICE = torch.device("cuda") if torch.cuda.is_available() else None


def unbatch(batch: dict, fields: list[str]) -> list[dict]:
    """The per-sample dicts a worker holds before collate (numpy views of the batch rows)."""
    return [{"__key__": key, **{f: batch[f][i].numpy() for f in fields}} for i, key in enumerate(batch["__key__"])]


def max_diff(a: dict, b: dict, fields: list[str]) -> float:
    """Largest absolute difference between two batches over ``fields``."""
    return max(float((a[f].double().cpu() - b[f].double().cpu()).abs().max()) for f in fields)


def hook(aug: Augmenter, batch: dict, features: dict, fields: list[str], seed: int, epoch: int) -> dict:
    """What a worker does: the per-sample hook on every row with the loader's generators, then collate."""
    samples = unbatch(batch, fields)
    rngs = loader_rngs(batch["__key__"], seed=seed, epoch=epoch)
    return collate([aug(s, r) for s, r in zip(samples, rngs)], features, fields)


def time_batch(aug: Augmenter, batch: dict, features: dict, fields: list[str], seed: int, epoch: int,
               times: dict[str, list[float]]) -> float:
    """Hook, batched (draws separately) and GPU timings of one batch; returns the max batched-vs-hook diff."""
    t, expected = timed(lambda: hook(aug, batch, features, fields, seed, epoch))
    times["hook"].append(t)
    keys = batch["__key__"]
    t, _ = timed(lambda: [aug.draw({"__key__": k, **{f: batch[f][i].numpy() for f in fields}}, r)
                          for i, (k, r) in enumerate(zip(keys, loader_rngs(keys, seed=seed, epoch=epoch)))])
    times["draws"].append(t)
    t, got = timed(lambda: augment_batch(aug, batch, loader_rngs(keys, seed=seed, epoch=epoch)))
    times["batched cpu"].append(t)
    diff = max_diff(expected, got, fields)
    if DEVICE is not None:
        on_device = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        t, got = timed(lambda: augment_batch(aug, on_device, loader_rngs(keys, seed=seed, epoch=epoch)), sync=True)
        times["batched gpu"].append(t)
        diff = max(diff, max_diff(expected, got, fields))
    return diff


def avmnist_table(shards: Path, batch_sizes: list[int], epochs: int) -> None:
    """Print the AV-MNIST table: every cost per batch size, as ms per batch and as a multiple of loading."""
    fields = ["image", "audio_spec"]
    loader = mmdata.load(shards, "train", fields=fields, batch_size=batch_sizes[0])
    features = loader.features
    aug = Augmenter.from_features(features, strength=0.5, text_in_image=True)
    print(f"AV-MNIST mini, policy {aug.policy}")
    print(f"{'batch':>6} {'cost':<12} {'ms/batch':>9} {'x load':>7}")
    for size in batch_sizes:
        times: dict[str, list[float]] = {k: [] for k in ("load", "hook", "load+hook", "draws", "batched cpu",
                                                         "batched gpu")}
        diff = 0.0
        for epoch in range(epochs):
            plain = iter(mmdata.load(shards, "train", fields=fields, batch_size=size, epoch=epoch, drop_last=True))
            augmented = iter(mmdata.load(shards, "train", fields=fields, batch_size=size, epoch=epoch,
                                         drop_last=True, augment=aug))
            while True:
                t, batch = timed(lambda: next(plain, None))
                if batch is None:
                    break
                times["load"].append(t)
                times["load+hook"].append(timed(lambda: next(augmented))[0])
                diff = max(diff, time_batch(aug, batch, features, fields, 0, epoch, times))
        load = statistics.median(times["load"])
        for name, values in times.items():
            if values:
                ms = statistics.median(values) * 1e3
                print(f"{size:>6} {name:<12} {ms:>9.2f} {ms / 1e3 / load:>7.2f}")
        print(f"{size:>6} max |batched - hook| = {diff:.3g}")


def epoch_rate(batches, epochs: int, sync: bool) -> float:
    """Samples/s over ``epochs`` full passes (``set_epoch`` before each), the GPU synchronised at the end."""
    samples, seconds = 0, 0.0
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        t, n = timed(lambda: sum(len(b["__key__"]) for b in batches), sync=sync)
        samples, seconds = samples + n, seconds + t
    return samples / seconds


def throughput_table(shards: Path, batch_size: int, workers: list[int], epochs: int) -> None:
    """Samples/s of augmented batches: per-sample in the loader's workers vs batched on each device."""
    fields = ["image", "audio_spec"]
    load = lambda w, aug=None: mmdata.load(shards, "train", fields=fields, batch_size=batch_size,  # noqa: E731
                                           num_workers=w, augment=aug)
    aug = Augmenter.from_features(load(0).features, strength=0.5, text_in_image=True)
    devices = [torch.device("cpu")] + ([DEVICE] if DEVICE is not None else [])
    print(f"\nAV-MNIST mini, augmented batches as the training step receives them, batch {batch_size}, "
          f"{epochs} epochs")
    print(f"{'workers':>7} {'per-sample':>11} " + " ".join(f"{'batched ' + d.type:>12}" for d in devices)
          + "   samples/s")
    for w in workers:
        rates = [epoch_rate(load(w, aug), epochs, False)]
        rates += [epoch_rate(DeviceAugmented(load(w), aug, d), epochs, d.type == "cuda") for d in devices]
        print(f"{w:>7} " + f"{rates[0]:>11.0f} " + " ".join(f"{r:>12.0f}" for r in rates[1:]))


def large_table(batch: int, repeats: int) -> None:
    """Hook vs batched on NYUv2-like RGB / depth / normals (in memory): where resampling dominates."""
    h, w = 240, 320
    features = {"image": Field("uint8", (h, w, 3), "jpg"), "depth": Field("float32", (h, w), "npy"),
                "normal": Field("float32", (h, w, 3), "npy")}
    fields = list(features)
    rng = make_rng(0, "bench", "large")
    normal = rng.standard_normal((batch, h, w, 3)).astype(np.float32)
    batch_dict = {"__key__": [f"nyu/train/{i}" for i in range(batch)],
                  "image": torch.from_numpy(rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)),
                  "depth": torch.from_numpy((rng.random((batch, h, w)) * 5).astype(np.float32)),
                  "normal": torch.from_numpy(normal / np.linalg.norm(normal, axis=-1, keepdims=True))}
    ops = ["rotate", "crop", "flip"]
    aug = Augmenter({"image": ops + ["jitter", "noise"], "depth": ops, "normal": ops}, strength=0.5)
    times: dict[str, list[float]] = {"hook": [], "draws": [], "batched cpu": [], "batched gpu": []}
    diff = max(time_batch(aug, batch_dict, features, fields, 0, e, times) for e in range(repeats))
    print(f"\nNYUv2-like {h}x{w} RGB uint8 + depth + normals, batch {batch}, policy {aug.policy}")
    hook_ms = statistics.median(times["hook"]) * 1e3
    for name, values in times.items():
        if values:
            ms = statistics.median(values) * 1e3
            print(f"{batch:>6} {name:<12} {ms:>9.2f} ms/batch {ms / hook_ms:>6.2f} x hook")
    print(f"{batch:>6} max |batched - hook| = {diff:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader workers, throughput table")
    parser.add_argument("--large-batch", type=int, default=16, help="0 skips the 240x320 table")
    parser.add_argument("--repeats", type=int, default=3, help="batches timed in the 240x320 table")
    # One intra-op thread, as bench/read_speed.py: on a shared 2-core machine 2-thread OpenMP ops showed
    # multi-millisecond tails (a 25k-element floor took 6 ms) that swamp batch-level timings.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {DEVICE or 'cpu only'}")
    with tempfile.TemporaryDirectory() as tmp:
        shards = avmnist_shards(args.workdir or Path(tmp))
        avmnist_table(shards, args.batch_sizes, args.epochs)
        throughput_table(shards, args.batch_sizes[-1], args.workers, args.epochs)
    if args.large_batch:
        large_table(args.large_batch, args.repeats)


if __name__ == "__main__":
    main()
