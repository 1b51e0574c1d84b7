"""Sampler cost per batch relative to loading the same batch from shards (target: samplers add < 5%).

Builds a synthetic AV-MNIST mini (2000 train samples), shards it, then for each batch size times, per batch:
loading with ``mmdata.load`` (random access + decode + collate, no workers), every sampler on that batch
size, ``gather`` of unimodal embeddings and of the batch's raw inputs with the tuples, ``tuple_infonce`` on
random embeddings (forward, and forward + backward), building MDM's negative dataset (per epoch, amortised)
and reading its rows for the batch (a random-access batch read by nature: expect ~1x a batch load). Each cost
is the median over all batches of all epochs; the ratio is that cost divided by the median cost of loading a
batch of the same size, measured in the same loop.

``gather`` copies ``k`` values per anchor and modality, so its cost grows with the bytes it writes; each
gather row also states those bytes and its throughput next to ``Tensor.clone`` of the same outputs, timed
right after it on the same batch (a plain memcpy into a fresh allocation, the floor for a materialised copy).

    python bench/samplers.py [--batch-sizes 32 128 256] [--negatives 16] [--epochs 3] [--repeats 5]
                             [--workdir DIR]

From other benchmarks: ``measure(batch_sizes=(32, 128, 256), repeats=5) -> list[dict]`` (one row per
operation and batch size: name, batch, seconds, ratio; gather rows add bytes, gbps, clone_gbps).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported from bench/report.py

import mmdata  # noqa: E402
from common import avmnist_shards, timed  # noqa: E402
from mmdata.rng import make_rng  # noqa: E402
from mmdata.samplers import (NegativeReader, batch_rng, drop_tuples, gather, marginal_permute,  # noqa: E402
                             modality_dropout, negative_dataset, tuple_disturb, tuple_infonce)

FIELDS = ("image", "audio_spec")
LOAD = "load batch (mmdata.load)"
#: Rows whose result is a dict of gathered tensors: timed against cloning that result.
GATHERS = ("gather embeddings [B,k,128]", "gather inputs [B,k,...] (copies k x)")


def _loss_backward(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> None:
    """Forward and backward of the tuple loss (fresh leaves each call, as a training step has)."""
    leaves = [x.detach().requires_grad_(True) for x in (anchor, positive, negatives)]
    tuple_infonce(*leaves).sum().backward()


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
        GATHERS[0]: lambda rng, b: gather(emb, tuples),
        GATHERS[1]: lambda rng, b: gather(b, tuples),
        "tuple_infonce (d=128)": lambda rng, b: tuple_infonce(emb["image"], emb["audio_spec"], neg),
        "tuple_infonce fwd+bwd (d=128)": lambda rng, b: _loss_backward(emb["image"], emb["audio_spec"], neg),
    }


def _clone_seconds(result: dict) -> tuple[float, int]:
    """Seconds to clone the tensors of a gather result, and their bytes."""
    tensors = [v for v in result.values() if isinstance(v, torch.Tensor)]
    seconds, _ = timed(lambda: [t.clone() for t in tensors])
    return seconds, sum(t.numel() * t.element_size() for t in tensors)


def _time_steps(steps: dict, costs: dict, data: dict, epoch: int, b: int, repeats: int) -> None:
    """Time every step ``repeats`` times on batch ``data``; a gather's clone right after each gather call."""
    for name, step in steps.items():
        for rng in [batch_rng(0, epoch, b, name) for _ in range(repeats)]:  # seeding has its own row
            seconds, result = timed(lambda: step(rng, data))
            costs[name].append(seconds)
            if name in GATHERS:
                clone, nbytes = _clone_seconds(result)
                costs[f"{name} clone"].append(clone)
                costs[f"{name} bytes"] = [nbytes]
            del result  # free a large gather before the next call, as a training step would


def measure_batch(shards: Path, batch: int, negatives: int, epochs: int, repeats: int) -> dict[str, list[float]]:
    """name -> per-call seconds (and gathers' clone seconds and bytes) over ``epochs`` epochs of full batches.

    Each step runs ``repeats`` times right after its batch is loaded (caches as cold as in training) and
    every run counts, so the median is robust to the odd preemption on a shared machine.
    """
    loader = mmdata.load(shards, "train", fields=list(FIELDS), batch_size=batch, drop_last=True, seed=0)
    steps = sampler_steps(batch, negatives)
    costs: dict[str, list[float]] = {LOAD: [], **{name: [] for name in steps}}
    costs.update({f"{name} clone": [] for name in GATHERS})
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        iterator = iter(loader)
        for b in range(len(loader)):
            seconds, data = timed(lambda: next(iterator))
            costs[LOAD].append(seconds)
            _time_steps(steps, costs, data, epoch, b, repeats)
    split = loader.shards
    per_epoch, tuples = timed(lambda: negative_dataset(split, make_rng(0, "negative_dataset", 0), modalities=FIELDS))
    costs["negative_dataset (per epoch / batches)"] = [per_epoch / len(loader)]
    reader, plan = NegativeReader(split, tuples), loader.plan()
    costs["read negative batch (random access)"] = [timed(lambda: reader.read_batch(rows))[0] for rows in plan]
    reader.close()
    return costs


def rows_of(batch: int, costs: dict[str, list[float]]) -> list[dict]:
    """Table rows for one batch size: medians, the ratio to the batch load, and gathers' bytes and GB/s."""
    load = statistics.median(costs[LOAD])
    rows = []
    for name, values in costs.items():
        if name.endswith((" clone", " bytes")):
            continue
        seconds = statistics.median(values)
        row = {"name": name, "batch": batch, "seconds": seconds, "ratio": seconds / load}
        if name in GATHERS:
            nbytes, clone = costs[f"{name} bytes"][0], statistics.median(costs[f"{name} clone"])
            row.update(bytes=nbytes, gbps=nbytes / seconds / 1e9, clone_gbps=nbytes / clone / 1e9,
                       clone_ratio=seconds / clone)
        rows.append(row)
    return rows


def measure(batch_sizes: Sequence[int] = (32, 128, 256), repeats: int = 5, *, negatives: int = 16,
            epochs: int = 3, workdir: Path | None = None) -> list[dict]:
    """Rows ``{name, batch, seconds, ratio[, bytes, gbps, clone_gbps, clone_ratio]}`` for every operation and
    batch size; ``ratio`` is seconds per call over seconds to load that batch (1 torch thread, as a worker)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as a DataLoader worker or the training process would have
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shards = avmnist_shards(workdir or Path(tmp))
            return [row for b in batch_sizes for row in rows_of(b, measure_batch(shards, b, negatives, epochs,
                                                                                 repeats))]
    finally:
        torch.set_num_threads(threads)


def print_table(rows: list[dict], negatives: int) -> None:
    """The __main__ table: ms per call and % of loading that batch, one column per batch size."""
    sizes = sorted({row["batch"] for row in rows})
    names = list(dict.fromkeys(row["name"] for row in rows))
    cell = {(row["name"], row["batch"]): row for row in rows}
    print(f"AV-MNIST mini, fields {FIELDS}, {negatives} negatives; ms per call (% of loading that batch)")
    print(f"{'operation':40s}" + "".join(f"{'B=' + str(b):>20s}" for b in sizes))
    for name in names:
        row_cells = [cell[name, b] for b in sizes]
        print(f"{name:40s}" + "".join(f"{r['seconds'] * 1e3:9.3f} ({100 * r['ratio']:6.2f}%)" for r in row_cells))
        if "bytes" in row_cells[0]:
            print(f"{'  MB copied, GB/s (clone GB/s)':40s}" + "".join(
                f"{r['bytes'] / 1e6:7.1f},{r['gbps']:5.1f} ({r['clone_gbps']:4.1f})" for r in row_cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--negatives", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rows = measure(args.batch_sizes, args.repeats, negatives=args.negatives, epochs=args.epochs,
                   workdir=args.workdir)
    print_table(rows, args.negatives)


if __name__ == "__main__":
    main()
