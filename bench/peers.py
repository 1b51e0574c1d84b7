#!/usr/bin/env python
"""Peer loaders side by side with ``mmdata.load``: webdataset over our shards, MMF per-file, MultiBench load-all.

Every corpus mini (``params.yaml`` sizes, built once into ``--workdir`` with ``mmdata.synth`` +
``shard_corpus``) is read by ``mmdata.load`` and by each peer that fits it, with the same samples (train split),
fields, batch size, shuffling, and every batch consumed (:func:`batch_sums` sums every field); the epoch sums of
each peer are checked against mmdata's (exactly for webdataset and MultiBench, within 3% for MMF's re-encoded
images). Contenders of one corpus run interleaved in rotating order, ``--repeats`` times; medians are reported.

Peers (behaviour reimplemented from their documented facts, no code copied):

- webdataset 1.0.2 over OUR tar shards (``shardshuffle`` + a 1000-sample shuffle buffer, our collate), with each
  decoder option it offers for the corpus' codecs: ``.npy`` by its default ``np.lib.format.read_array`` or a
  zero-copy ``np.frombuffer`` handler; images by PIL (``np.asarray(Image.open(...))``: webdataset's ``"rgb8"``
  minus its ``convert`` copy, mode kept so 16-bit depth stays 16-bit) or a cv2 handler; Arrow by a pyarrow
  handler (webdataset has none). The fastest option is the reference, and named.
- MMF per-file (Hateful Memes, MM-IMDb): annotations read once (jsonl; MM-IMDb's ``split.json`` + per-movie
  json), then per sample ``PIL.Image.open(...).convert("RGB")``, resize to the shard size, to float [3, H, W] / 255
  and MMF's mean/std normalisation; ``DataLoader(shuffle=True)`` with the default collate.
- MultiBench load-everything (AV-MNIST, MOSI, MOSEI): ``bench/read_speed.py``'s loaders (whole arrays / pickle in
  RAM, per-sample tensors). Their "cold" figure (load + first epoch) is reported beside the warm one.

Run: ``python bench/peers.py [--corpus NAME ...] [--repeats 3] [--workdir DIR]``.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmdata  # noqa: E402
from mmdata.shards.build import shard_corpus  # noqa: E402
from mmdata.synth import SYNTHS  # noqa: E402
import peer_loaders as pl  # noqa: E402
from common import settled  # noqa: E402
import yaml  # noqa: E402

CORPORA = ("avmnist", "crema_d", "hateful_memes", "mmimdb", "mosei", "mosi", "nyuv2", "snli_ve", "stocks", "sunrgbd")
# Where the MultiBench/MMF loaders need a release the default mini does not write (the shards then come from it).
SYNTH_EXTRA = {"mosei": {"releases": ["mult"]}}
READER_EXTRA = {"mosei": {"release": "mult"}, "mosi": {"release": "mult"}}
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def build_mini(name: str, work: Path, scale: float = 1.0) -> tuple[Path, Path]:
    """Synthesise and shard corpus ``name`` under ``work`` (params.yaml sizes x ``scale``); reuse if done.

    Returns:
        (raw root, corpus shard directory).
    """
    cfg = yaml.safe_load(PARAMS.read_text())["corpora"][name]
    synth = {**cfg["synth"], **SYNTH_EXTRA.get(name, {})}
    for split in ("train", "valid", "test"):
        if scale != 1.0 and isinstance(synth.get(split), int):
            synth[split] = max(1, round(synth[split] * scale))
    tag = f"{name}-x{scale:g}"
    raw, shards = work / "raw" / tag, work / "shards" / tag
    if not (shards / "train" / "manifest.json").exists():
        root = SYNTHS[name](raw, **synth)
        shard_corpus(name, root, shards, reader={**cfg["reader"], **READER_EXTRA.get(name, {})}, progress=False,
                     **cfg["shard"])
    return raw, settled(shards)


def batch_sums(batch: Any) -> tuple[int, np.ndarray]:
    """(samples, per-field sums) of one batch dict: numbers summed as float64, strings by their length."""
    keys = sorted(k for k in batch if not k.startswith("__") and not k.endswith(("_lengths", "_mask")))
    sums = []
    for k in keys:
        v = batch[k]
        if isinstance(v, torch.Tensor):
            sums.append(float(v.numpy().sum(dtype=np.float64)))
        else:
            sums.append(_plain_sum(v))
    return len(batch["__key__"]), np.array(sums)


def _plain_sum(value: Any) -> float:
    """Sum of a non-tensor batch value: strings count their length, lists recurse."""
    if isinstance(value, str):
        return float(len(value))
    if isinstance(value, (list, tuple)):
        return float(sum(_plain_sum(v) for v in value))
    return float(np.sum(value))


def run_epochs(epochs: Callable[[int], Iterable[Any]], consume: Callable[[Any], tuple[int, np.ndarray]],
               count: int, first: int = 0) -> tuple[float, int, np.ndarray]:
    """Seconds to consume epochs ``first .. first + count - 1``; samples and sums of the first of them."""
    start, n, sums = time.perf_counter(), 0, None
    for e in range(first, first + count):
        for batch in epochs(e):
            k, s = consume(batch)
            if e == first:
                n, sums = n + k, s if sums is None else sums + s
    return time.perf_counter() - start, n, sums if sums is not None else np.zeros(0)


def measure_one(make: Callable[[], Callable[[int], Iterable[Any]]], consume: Callable, warm_epochs: int) -> dict:
    """Cold (make + first epoch) and warm (``warm_epochs`` more) seconds of one contender."""
    start = time.perf_counter()
    epochs = make()
    first, n, sums = run_epochs(epochs, consume, 1)
    cold = time.perf_counter() - start
    warm, _, _ = run_epochs(epochs, consume, warm_epochs, first=1)
    return {"cold_s": cold, "warm_s": warm / warm_epochs, "samples": n, "sums": sums, "first_s": first}


def mmdata_epochs(shards: Path, fields: list[str] | None, batch_size: int) -> Callable[[], Callable]:
    """A contender factory: ``mmdata.load`` (workers 0, shuffled), one epoch per call, epoch-seeded."""
    def make() -> Callable[[int], Iterable[Any]]:
        loader = mmdata.load(shards, "train", fields=fields, batch_size=batch_size, shuffle=True)

        def epoch(e: int) -> Iterable[Any]:
            loader.set_epoch(e)
            return loader
        return epoch
    return make


def contenders(name: str, raw: Path, shards: Path, batch_size: int) -> dict[str, tuple]:
    """name -> (factory, consume, kind, check tolerance) for every loader that reads this corpus."""
    out = {"mmdata": (mmdata_epochs(shards, pl.fields_of(name, shards), batch_size), batch_sums, "mmdata", 0)}
    for variant in pl.wds_variants(shards / "train"):
        out[f"wds {variant}"] = (pl.wds_epochs(shards / "train", pl.fields_of(name, shards), batch_size, variant),
                                 batch_sums, "webdataset", 1e-6)
    out.update(pl.raw_peers(name, raw, shards, batch_size))
    return out


def measure_corpus(name: str, work: Path, batch_size: int, repeats: int, min_rows: int) -> list[dict[str, Any]]:
    """Rows for one corpus: each peer kind's best contender vs mmdata (warm, and cold for MultiBench)."""
    raw, shards = build_mini(name, work)
    rows_n = json.loads((shards / "train" / "manifest.json").read_text())["rows"]
    warm_epochs = max(1, math.ceil(min_rows / rows_n))
    cands = contenders(name, raw, shards, batch_size)
    runs: dict[str, list[dict]] = {k: [] for k in cands}
    names = list(cands)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:  # rotate the order to cancel drift
            make, consume, _, _ = cands[k]
            runs[k].append(measure_one(make, consume, warm_epochs))
    return summarise(name, cands, runs, batch_size)


def _check(ref: dict, run: dict, tol: float) -> str:
    if run["samples"] != ref["samples"]:
        return f"samples {run['samples']} != mmdata's {ref['samples']}"
    if len(run["sums"]) != len(ref["sums"]) or not np.allclose(run["sums"], ref["sums"], rtol=max(tol, 1e-6),
                                                                 atol=1e-3):
        return f"epoch sums {np.round(run['sums'], 1).tolist()} != mmdata's {np.round(ref['sums'], 1).tolist()}"
    return "ok"


def summarise(name: str, cands: dict, runs: dict, batch_size: int) -> list[dict[str, Any]]:
    """Median rates; per peer kind the fastest contender becomes the reference of one row."""
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("cold_s", "warm_s")} for k, v in runs.items()}
    n = runs["mmdata"][0]["samples"]
    ours = med["mmdata"]
    rows = []
    kinds = sorted({c[2] for k, c in cands.items() if k != "mmdata"})
    for kind in kinds:
        members = [k for k in cands if cands[k][2] == kind]
        best = min(members, key=lambda k: med[k]["warm_s"])
        options = ", ".join(f"{k}: {runs[k][0]['samples'] / med[k]['warm_s']:.0f}/s" for k in members)
        check = _check(runs["mmdata"][0], runs[best][0], cands[best][3])
        for phase in (("warm", "cold") if kind == "multibench" else ("warm",)):
            ref_s, our_s = med[best][f"{phase}_s"], ours[f"{phase}_s"]
            rows.append({"section": "peers", "corpus": name, "phase": phase, "reference": best, "kind": kind,
                         "ours": n / our_s, "ref": runs[best][0]["samples"] / ref_s, "ratio": ref_s / our_s,
                         "goal": 1.0, "met": ref_s / our_s > 1.0, "check": check, "options": options,
                         "batch_size": batch_size})
    return rows


def measure(corpora: Iterable[str] = CORPORA, batch_size: int = 64, repeats: int = 3, min_rows: int = 1000,
            workdir: Path | None = None) -> list[dict[str, Any]]:
    """Rows of the peer comparison for ``corpora`` (see the module docstring); minis built into ``workdir``."""
    with tempfile.TemporaryDirectory(prefix="mmdata-peers-") as tmp:
        work = Path(workdir or tmp)
        rows = []
        for name in corpora:
            rows += measure_corpus(name, work, batch_size, repeats, min_rows)
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", choices=CORPORA, default=list(CORPORA))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-rows", type=int, default=1000, help="warm epochs per run read at least this many rows")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the minis here (default: a temp dir)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as read_speed.py: 2-thread ops on a shared 2-core machine add ms tails
    rows = measure(args.corpus, args.batch_size, args.repeats, args.min_rows, args.workdir)
    print(f"{'corpus':14s} {'phase':5s} {'mmdata/s':>9s} {'peer/s':>9s} {'ratio':>6s}  reference [check]; options")
    for r in rows:
        print(f"{r['corpus']:14s} {r['phase']:5s} {r['ours']:9.0f} {r['ref']:9.0f} {r['ratio']:6.2f}  "
              f"{r['reference']} [{r['check']}]; {r['options']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
