"""Stage ``train@<experiment>``: train the experiment's method on its corpus's train shards."""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

import mmdata
from methods import get_method
from methods.loop import fit, save_checkpoint
from mmdata.shards.read import Loader
from pipelines.params import (check_keys, experiment_dir, experiment_params, keyword_options, load_params,
                              shards_dir)

#: Keys of the ``train`` block (global defaults, overridable per experiment).
TRAIN_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "num_workers", "device", "amp"}


def train_settings(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The experiment's training settings: global ``train`` overridden by ``experiments.<name>.train``."""
    settings = {**params.get("train", {}), **experiment_params(params, name).get("train", {})}
    check_keys(settings, TRAIN_KEYS, f"train / experiments.{name}.train")
    return settings


def open_split(exp: dict[str, Any], split: str, settings: dict[str, Any], seed: int) -> Loader:
    """A loader over the experiment's input fields plus the label for one split."""
    shards = mmdata.load(shards_dir(exp["corpus"]), split, fields=[], batch_size=1).shards
    fields = [*exp["fields"], shards.manifest["label_field"]]
    return mmdata.load(shards_dir(exp["corpus"]), split, fields=fields, batch_size=settings["batch_size"],
                       seed=seed, num_workers=settings.get("num_workers", 0))


def build(exp: dict[str, Any], loader: Loader, seed: int) -> tuple[Any, torch.nn.Module]:
    """(method module, freshly initialised model) for an experiment block; model keys are checked."""
    method = get_method(exp["method"])
    options = exp.get("model", {})
    check_keys(options, keyword_options(method.build_model) - {"fields"}, f"experiments.*.model ({exp['method']})")
    torch.manual_seed(seed)  # the initial weights are part of the experiment
    return method, method.build_model(loader.shards.features, fields=list(exp["fields"]), **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment")
    args = parser.parse_args(argv)
    params = load_params()
    exp, settings, seed = experiment_params(params, args.experiment), train_settings(params, args.experiment), \
        params.get("seed", 0)
    train, valid = open_split(exp, "train", settings, seed), open_split(exp, "valid", settings, seed)
    method, model = build(exp, train, seed)
    history = fit(method, model, train, epochs=settings["epochs"], lr=settings["lr"],
                  weight_decay=settings.get("weight_decay", 0.0), device=settings.get("device", "auto"),
                  amp=settings.get("amp", False), seed=seed, valid_batches=valid,
                  log=lambda line: print(f"train@{args.experiment}: {line}", flush=True))
    out = experiment_dir(args.experiment)
    save_checkpoint(out / "model.pt", model, {"experiment": args.experiment, **exp})
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")


if __name__ == "__main__":
    main()
