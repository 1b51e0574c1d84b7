"""One rank of tests/test_ddp.py, started by ``python -m torch.distributed.run ... -m tests.ddp_worker OUT``.

Inside torchrun's gloo group (:func:`methods.distributed.process_group`) each rank: trains :func:`toy_fit`
on ``OUT/even`` (40 rows in 8 shards, ``partition="sample"``) and on ``OUT/uneven`` (33 rows in 7 shards: the
ranks hold 4 and 3 shards of unequal sizes, ``partition="shard"``), with 2 loader workers, and writes what it
saw to ``OUT/rank<r>_<name>.json`` (keys per epoch, padded rows per epoch, steps) and its weights to
``OUT/rank<r>_<name>.pt``, and what DDP refuses to ``OUT/rank<r>_refused.json``; trains MDM (:func:`mdm_fit`)
on its share of MOSI, writing its initial and final weights to ``OUT/rank<r>_mdm.pt``; then, in ``OUT/repo<r>`` (a working directory of its own holding the same MOSI
shards and params.yaml), trains the train stage's jobs with :func:`pipelines.train.train_corpus`, so the test
sees which ranks wrote outputs.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

import mmdata
from methods import distributed
from methods.loop import fit
from mmdata.errors import ConfigError

#: The toy runs: name -> (partition, epochs). Global batch 8 (4 rows per rank at 2 ranks).
RUNS = {"even": ("sample", 3), "uneven": ("shard", 2)}
GLOBAL_BATCH = 8


def training_step(model: nn.Module, batch: dict[str, Any], tuples: Any = None) -> dict[str, torch.Tensor]:
    """Mean cross-entropy of a linear map of the [B, 8, 8] uint8 toy image (no dropout, no batch statistics:
    the gradient of a batch's mean is the mean of equal halves' gradients)."""
    x = batch["image"].float().reshape(len(batch["__key__"]), -1) / 255.0
    out = model(x)
    return {"loss": F.cross_entropy(out, batch["label"]), "pred": out.argmax(-1).detach()}


def toy_fit(split: Path, *, partition: str, epochs: int, batch_size: int, num_workers: int = 2,
            rank: int | None = None, world_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a seeded ``Linear(64, 3)`` on ``split`` with :func:`methods.loop.fit` (DDP under a process group).

    Returns:
        (model, record): ``record`` holds ``seen`` (epoch -> keys delivered to this rank, padding included),
        ``padded`` (epoch -> ``Loader.padded``) and ``steps`` (optimizer steps of this rank).
    """
    record: dict[str, Any] = {"seen": {}, "padded": {}, "steps": 0}
    with mmdata.load(split, "train", fields=["image", "label"], batch_size=batch_size, seed=0, partition=partition,
                     num_workers=num_workers, rank=rank, world_size=world_size) as loader:
        def step(model: nn.Module, batch: dict[str, Any], tuples: Any) -> dict[str, torch.Tensor]:
            record["seen"].setdefault(str(loader.epoch), []).extend(batch["__key__"])
            record["padded"][str(loader.epoch)] = loader.padded
            record["steps"] += 1
            return training_step(model, batch, tuples)

        torch.manual_seed(0)
        model = nn.Linear(64, 3)
        fit(SimpleNamespace(training_step=step), model, loader, epochs=epochs, lr=0.05, device="cpu", seed=0,
            log=lambda line: None)
    return model, record


def refused() -> dict[str, str | None]:
    """The ConfigError messages (None: accepted) of settings DDP cannot train with, checked under the group."""
    checks = {"batch_7": lambda: distributed.share("train", 7), "batch_8": lambda: distributed.share("train", 8)}
    messages: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            check()
            messages[name] = None
        except ConfigError as error:
            messages[name] = str(error)
    return messages


def mdm_fit(shards: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """MDM (its critic's own Adam steps inside the model step) on this rank's share of MOSI: (initial, final)
    weights, critic included."""
    from methods import mdm

    share = distributed.share("train", GLOBAL_BATCH)
    loader = mmdata.load(shards, "train", fields=["feat_text", "feat_audio", "label"], seed=0, **share)
    torch.manual_seed(0)
    model = mdm.build_model(loader.shards.features, fields=["feat_text", "feat_audio"], dim=8, hidden=16,
                            critic_hidden=16, unroll=2, critic_lr=0.01)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    mdm.fit(model, loader, epochs=2, lr=0.01, device="cpu", seed=0, log=lambda line: None)
    return initial, model.state_dict()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        rank, ranks = distributed.rank(), distributed.world_size()
        for name, (partition, epochs) in RUNS.items():
            model, record = toy_fit(out / name, partition=partition, epochs=epochs, batch_size=GLOBAL_BATCH // ranks)
            (out / f"rank{rank}_{name}.json").write_text(json.dumps({**record, "world_size": ranks}))
            torch.save(model.state_dict(), out / f"rank{rank}_{name}.pt")
        (out / f"rank{rank}_refused.json").write_text(json.dumps(refused()))
        initial, final = mdm_fit(out / f"repo{rank}" / "data" / "shards" / "mosi")
        torch.save({"initial": initial, "final": final}, out / f"rank{rank}_mdm.pt")
        os.chdir(out / f"repo{rank}")  # the ranks' own working directories: who writes shows
        from pipelines.train import train_corpus

        train_corpus(yaml.safe_load(Path("params.yaml").read_text()), "mosi")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
