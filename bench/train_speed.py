"""Training throughput (samples/s) through the one loop, ``methods.loop.fit``: fp32 against AMP, and training
from shards against training from batches already in memory (the model's own ceiling), side by side in one run.

Builds the AV-MNIST mini (late fusion of image + spectrogram encoders) in a temporary directory, or reads any
corpus's existing shards with ``--shards``. Per configuration it trains ``--epochs`` epochs and reports the
median samples/s of the epochs after the first (warm-up: CUDA context, cuDNN autotuning, page cache).

    python bench/train_speed.py [--device auto] [--batch-size 128] [--epochs 4] [--workers 0 4]
    python bench/train_speed.py --shards data/shards/nyuv2 --method rgbd_seg --fields image depth normal \\
        --model '{"width": 12}' --batch-size 16

Rows: ``load only`` iterates the loader (decode + collate, no model); ``shards`` trains from ``mmdata.load``;
``memory`` trains from the same batches held on the device. fp32 vs ``amp`` (fp16 + GradScaler on CUDA, bf16 on
CPU) is the ratio printed last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mmdata
from common import avmnist_shards
from methods import get_method
from methods.loop import fit, resolve_device


def samples_per_s(history: dict) -> float:
    """Median samples/s over the epochs after the first (the first pays for warm-up)."""
    rates = history["samples_per_s"]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def load_only(loader, epochs: int) -> float:
    """Median samples/s of iterating the loader alone (epochs after the first)."""
    rates = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["__key__"])
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def on_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=None, help="a corpus shard dir (default: AV-MNIST mini)")
    parser.add_argument("--method", default="late_fusion")
    parser.add_argument("--fields", nargs="+", default=["image", "audio_spec"])
    parser.add_argument("--model", default="{}", help="build_model options as JSON")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    parser.add_argument("--train-samples", type=int, default=6000, help="AV-MNIST mini size")
    args = parser.parse_args()
    device = resolve_device(args.device)
    method = get_method(args.method)
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or avmnist_shards(Path(tmp), train=args.train_samples, test=100)
        label = mmdata.load(shards, "train", fields=[], batch_size=1).shards.manifest["label_field"]

        def loader(workers: int):
            return mmdata.load(shards, "train", fields=[*args.fields, label], batch_size=args.batch_size,
                               seed=0, num_workers=workers, drop_last=True)

        def train(batches, amp: bool) -> float:
            torch.manual_seed(0)
            model = method.build_model(loader(0).shards.features, fields=list(args.fields), **json.loads(args.model))
            history = fit(method, model, batches, epochs=args.epochs, lr=1e-3, device=device, amp=amp,
                          log=lambda line: None)
            return samples_per_s(history)

        rows = []
        for workers in args.workers:
            rows.append((f"load only, {workers} workers", load_only(loader(workers), args.epochs)))
            for amp in (False, True):
                rows.append((f"shards, {workers} workers, {'amp' if amp else 'fp32'}", train(loader(workers), amp)))
        cached = [on_device(b, device) for b in loader(0)]
        for amp in (False, True):
            rows.append((f"memory (on {device.type}), {'amp' if amp else 'fp32'}", train(cached, amp)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{shards.name}: {args.method} on {args.fields}, batch {args.batch_size}, device {name}, "
          f"torch {torch.__version__}")
    for label_, rate in rows:
        print(f"  {label_:42s} {rate:12,.0f} samples/s")
    fp32, amp = rows[-2][1], rows[-1][1]
    print(f"  amp / fp32 from memory: x{amp / fp32:.2f}")


if __name__ == "__main__":
    main()
