"""Sampler cost per batch relative to loading the same batch from shards (target: samplers add < 5%).

Builds a synthetic AV-MNIST mini (2000 train samples), shards it, then for each batch size times, per batch:
loading with ``mmdata.load`` (random access + decode + collate, no workers), every sampler on that batch
size, ``gather`` of unimodal embeddings and of the batch's raw inputs with the tuples, ``tuple_infonce`` on
random embeddings, building MDM's negative dataset (per epoch, amortised) and reading its rows for the
batch. Each cost is the median over all batches of all epochs; the percentage is that cost divided by the
median cost of loading a batch of the same size.

    python bench/samplers.py [--batch-sizes 32 128 256] [--negatives 16] [--epochs 3] [--repeats 3]
                             [--workdir DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import mmdata
from common import avmnist_shards, timed
from mmdata.rng import make_rng
from mmdata.samplers import (NegativeReader, batch_rng, drop_tuples, gather, marginal_permute, modality_dropout,
                             negative_dataset, tuple_disturb, tuple_infonce)

FIELDS = ("image", "audio_spec")


def sampler_steps(batch: int, negatives: int) -> dict[str, Callable[[object, dict], object]]:
    """Per-batch operations to time: name -> fn(rng, batch_dict). Samplers first, then materialisation."""
    ratios = {"all": 1.0, "image": 1.0, "audio_spec": 2.0}
    tuples = tuple_disturb(batch, make_rng(1), modalities=FIELDS, num_negatives=negatives, ratios=ratios)
    emb = {name: torch.randn(batch, 128) for name in FIELDS}
    neg = torch.randn(batch, negatives, 128)
    return {
        "tuple_disturb": lambda rng, b: tuple_disturb(batch, rng, modalities=FIELDS, num_negatives=negatives,
                                                      ratios=ratios),
        "tuple_disturb k=2": lambda rng, b: tuple_disturb(batch, rng, modalities=FIELDS, num_negatives=negatives,
                                                          ratios=ratios, k=2),
        "marginal_permute": lambda rng, b: marginal_permute(batch, rng, modalities=FIELDS),
        "modality_dropout + drop_tuples": lambda rng, b: drop_tuples(
            tuples, modality_dropout(batch, rng, modalities=FIELDS, p=1.0)),
        "batch_rng (seeding)": lambda rng, b: batch_rng(0, 0, 1),
        "gather embeddings [B,k,128]": lambda rng, b: gather(emb, tuples),
        "gather inputs [B,k,...] (copies k x)": lambda rng, b: gather(b, tuples),
        "tuple_infonce (d=128)": lambda rng, b: tuple_infonce(emb["image"], emb["audio_spec"], neg),
    }


def measure(shards: Path, batch: int, negatives: int, epochs: int, repeats: int) -> list[tuple[str, float]]:
    """(name, median seconds per batch) for loading and every step, over ``epochs`` epochs of full batches.

    Each step runs ``repeats`` times right after its batch is loaded (caches as cold as in training) and
    every run counts, so the median is robust to the odd preemption on a shared machine.
    """
    loader = mmdata.load(shards, "train", fields=list(FIELDS), batch_size=batch, drop_last=True, seed=0)
    steps = sampler_steps(batch, negatives)
    costs: dict[str, list[float]] = {"load batch (mmdata.load)": [], **{name: [] for name in steps}}
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        iterator = iter(loader)
        for b in range(len(loader)):
            seconds, data = timed(lambda: next(iterator))
            costs["load batch (mmdata.load)"].append(seconds)
            for name, step in steps.items():
                rngs = [batch_rng(0, epoch, b, name) for _ in range(repeats)]  # seeding has its own row
                costs[name] += [timed(lambda: step(rng, data))[0] for rng in rngs]
    split = loader.shards
    per_epoch, tuples = timed(lambda: negative_dataset(split, make_rng(0, "negative_dataset", 0), modalities=FIELDS))
    costs["negative_dataset (per epoch / batches)"] = [per_epoch / len(loader)]
    reader, plan = NegativeReader(split, tuples), loader.plan()
    costs["read negative batch (random access)"] = [timed(lambda: reader.read_batch(rows))[0] for rows in plan]
    reader.close()
    return [(name, statistics.median(values)) for name, values in costs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--negatives", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core, as a DataLoader worker or the training process would have
    with tempfile.TemporaryDirectory() as tmp:
        shards = avmnist_shards(args.workdir or Path(tmp))
        table = {b: measure(shards, b, args.negatives, args.epochs, args.repeats) for b in args.batch_sizes}
    names = [name for name, _ in table[args.batch_sizes[0]]]
    print(f"AV-MNIST mini, fields {FIELDS}, {args.negatives} negatives; ms per batch (% of loading that batch)")
    print(f"{'operation':40s}" + "".join(f"{'B=' + str(b):>20s}" for b in args.batch_sizes))
    for i, name in enumerate(names):
        cells = []
        for b in args.batch_sizes:
            load, cost = table[b][0][1], table[b][i][1]
            cells.append(f"{cost * 1e3:9.3f} ({100 * cost / load:6.2f}%)")
        print(f"{name:40s}" + "".join(f"{c:>20s}" for c in cells))


if __name__ == "__main__":
    main()
