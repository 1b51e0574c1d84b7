"""Stage ``train@<corpus>``: train every run of ``experiments.<corpus>`` on the corpus's train shards.

One process per corpus, not per run: starting Python with torch and DVC's bookkeeping cost ~5 s a stage,
more than most mini runs train for. Outputs: ``results/models/<corpus>/<run>/model.pt`` and
``results/history/<corpus>.json`` (run -> per-epoch losses and the best epoch).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

import mmdata
from methods import get_method
from methods.loop import fit, save_checkpoint
from mmdata.errors import run_guarded
from mmdata.shards.read import Loader
from pipelines.params import (check_keys, corpus_runs, experiment_params, history_path, keyword_options,
                              load_params, models_dir, shards_dir)

#: History entries measured by the wall clock, left out of results/history (see :func:`train_run`).
WALL_CLOCK = ("seconds", "samples_per_s")
#: Keys of the ``train`` block (global defaults, overridable per experiment).
TRAIN_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "num_workers", "device", "amp"}


def train_settings(params: dict[str, Any], corpus: str, run: str) -> dict[str, Any]:
    """A run's training settings: global ``train`` overridden by ``experiments.<corpus>.<run>.train``."""
    settings = {**params.get("train", {}), **experiment_params(params, corpus, run).get("train", {})}
    check_keys(settings, TRAIN_KEYS, f"train / experiments.{corpus}.{run}.train")
    return settings


#: Splits this process has re-hashed: once per stage, not once per run of the corpus.
_VERIFIED: set[tuple[str, str]] = set()


def open_split(exp: dict[str, Any], split: str, settings: dict[str, Any], seed: int) -> Loader:
    """A loader over the run's input fields plus the label for one split (``exp`` from experiment_params).

    The first open of a split in the process re-hashes every shard against its manifest (``verify=True``), so
    the stage fails before training on shards that differ from those written: DVC sees an edit only when the
    stage runs through ``dvc repro``, and bit rot that keeps size and mtime not even then, as it trusts its
    cached hashes (reliability TRN-07, DVC-04).
    """
    where = (str(shards_dir(exp["corpus"])), split)
    shards = mmdata.load(where[0], split, fields=[], batch_size=1, verify=where not in _VERIFIED).shards
    _VERIFIED.add(where)
    fields = [*exp["fields"], shards.manifest["label_field"]]
    return mmdata.load(shards_dir(exp["corpus"]), split, fields=fields, batch_size=settings["batch_size"],
                       seed=seed, num_workers=settings.get("num_workers", 0))


def build(exp: dict[str, Any], loader: Loader, seed: int) -> tuple[Any, torch.nn.Module]:
    """(method module, freshly initialised model) for a run block; model keys are checked."""
    method = get_method(exp["method"])
    options = exp.get("model", {})
    check_keys(options, keyword_options(method.build_model) - {"fields"}, f"experiments.*.model ({exp['method']})")
    torch.manual_seed(seed)  # the initial weights are part of the experiment
    return method, method.build_model(loader.shards.features, fields=list(exp["fields"]), **options)


def train_run(params: dict[str, Any], corpus: str, run: str) -> dict[str, Any]:
    """Train run ``experiments.<corpus>.<run>``, save its model, and return its per-epoch history (losses,
    best epoch, device, amp; no wall-clock figures)."""
    exp, settings, seed = experiment_params(params, corpus, run), train_settings(params, corpus, run), \
        params.get("seed", 0)
    train, valid = open_split(exp, "train", settings, seed), open_split(exp, "valid", settings, seed)
    method, model = build(exp, train, seed)
    history = fit(method, model, train, epochs=settings["epochs"], lr=settings["lr"],
                  weight_decay=settings.get("weight_decay", 0.0), device=settings.get("device", "auto"),
                  amp=settings.get("amp", False), seed=seed, valid_batches=valid,
                  log=lambda line: print(f"train@{corpus}.{run}: {line}", flush=True))
    save_checkpoint(models_dir(corpus) / run / "model.pt", model, {"experiment": f"{corpus}.{run}", **exp})
    # Wall-clock figures differ on every run (they are in the log lines above): the tracked history keeps what
    # the seed determines, so a re-run leaves git clean and DVC sees the same output.
    return {key: value for key, value in history.items() if key not in WALL_CLOCK}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    args = parser.parse_args(argv)
    params = load_params()
    histories = {run: train_run(params, args.corpus, run) for run in corpus_runs(params, args.corpus)}
    path = history_path(args.corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(histories, indent=1) + "\n")  # last: its presence means every run finished


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.train", main))
