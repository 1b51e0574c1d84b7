"""Stage ``train@<corpus>``: train every run of ``experiments.<corpus>`` (the selected suite) on the corpus's
train shards, once per seed.

One stage per corpus, not per run: starting Python with torch and DVC's bookkeeping cost ~5 s a stage, more
than most mini runs train for. Within the stage the (run, seed) jobs train in parallel processes on CPU, each
with ``train.threads`` torch threads (see :func:`train_jobs`). Outputs: ``results/models/<corpus>/<run>/seed<s>.pt``,
``results/history/<corpus>.json`` (run -> seed -> per-epoch losses and the best epoch) and
``results/curves/<corpus>/<run>.csv`` (epoch, losses averaged over the seeds: ``dvc plots``).

Data-parallel: ``torchrun --nproc_per_node N -m pipelines.train <corpus>`` (or ``train.nproc: N``: then this
module launches torchrun) trains the (run, seed) jobs one after another, each on all N ranks with DDP
(:mod:`methods.distributed`; ``train.batch_size`` is the global batch); rank 0 alone writes the outputs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from typing import Any

import numpy as np
import torch

import mmdata
from methods import distributed, get_method
from methods.loop import fit, resolve_device, save_checkpoint
from methods.parallel import available_cores, run_parallel
from mmdata.errors import ConfigError, run_guarded
from mmdata.augment import Augmenter
from mmdata.augment.batched import DeviceAugmented, check_batchable
from mmdata.rng import make_rng
from mmdata.samplers import CONTEXT_OPTIONS, SAMPLERS, Sampler, sampler_options
from mmdata.samplers.label_fraction import label_fraction
from mmdata.shards.read import Loader
from pipelines.params import (check_keys, corpus_runs, curves_dir, experiment_params, history_path,
                              keyword_options, load_params, model_path, run_seeds, shards_dir)

#: History entries measured by the wall clock, left out of results/history (see :func:`train_run`).
WALL_CLOCK = ("seconds", "samples_per_s")
#: Keys of the ``train`` block (global defaults, overridable per experiment).
TRAIN_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "num_workers", "device", "amp", "seeds", "threads",
              "nproc"}


def train_settings(params: dict[str, Any], corpus: str, run: str) -> dict[str, Any]:
    """A run's training settings: global ``train`` overridden by ``experiments.<corpus>.<run>.train``."""
    settings = {**params.get("train", {}), **experiment_params(params, corpus, run).get("train", {})}
    check_keys(settings, TRAIN_KEYS, f"train / experiments.{corpus}.{run}.train")
    return settings


#: Splits this process has re-hashed: once per stage, not once per run of the corpus.
_VERIFIED: set[tuple[str, str]] = set()


def open_split(exp: dict[str, Any], split: str, settings: dict[str, Any], seed: int,
               rows: np.ndarray | None = None, augment: Augmenter | None = None) -> Loader:
    """A loader over the run's input fields plus the label for one split (``exp`` from experiment_params).

    The first open of a split in the process re-hashes every shard against its manifest (``verify=True``), so
    the stage fails before training on shards that differ from those written: DVC sees an edit only when the
    stage runs through ``dvc repro``, and bit rot that keeps size and mtime not even then, as it trusts its
    cached hashes (reliability TRN-07, DVC-04). ``rows`` restricts it to a subset (few-shot runs).
    """
    where = (str(shards_dir(exp["corpus"])), split)
    shards = mmdata.load(where[0], split, fields=[], batch_size=1, verify=where not in _VERIFIED, rank=0,
                         world_size=1).shards
    _VERIFIED.add(where)
    fields = [*exp["fields"], shards.manifest["label_field"]]
    # under DDP: this rank's share of the global batch (methods.distributed.share); else the batch as given
    return mmdata.load(shards_dir(exp["corpus"]), split, fields=fields, seed=seed, rows=rows, augment=augment,
                       num_workers=settings.get("num_workers", 0), **distributed.share(split, settings["batch_size"]))


def run_sampler(exp: dict[str, Any]) -> Sampler | None:
    """The run's negative sampler: the one :data:`mmdata.samplers.SAMPLERS` entry of ``samplers:`` (its
    options, plus ``modalities`` = the run's fields), or None.

    Raises:
        ConfigError: more than one tuple sampler, an unknown one, or options it does not take.
    """
    block = exp.get("samplers") or {}
    where = f"experiments.{exp['corpus']}.*.samplers"
    check_keys(block, set(SAMPLERS), where)
    if len(block) > 1:
        raise ConfigError(f"{where} in params.yaml names {sorted(block)}; a run draws its negatives from one sampler")
    if not block:
        return None
    name, options = next(iter(block.items()))
    check_keys(options or {}, sampler_options(name) - CONTEXT_OPTIONS, f"{where}.{name}")
    return Sampler(name, {**(options or {}), "modalities": list(exp["fields"])})


#: Keys of a run's ``augment:`` block: ``Augmenter.from_features`` options plus ``batched``.
AUGMENT_KEYS = {"policy", "strength", "p", "text_in_image", "batched"}


def run_augmenter(exp: dict[str, Any], features: Any) -> Augmenter | None:
    """The run's training augmentation from ``augment:`` (``Augmenter.from_features`` options: ``policy``,
    null for the modalities' default ops; ``strength``; ``p``; ``text_in_image``), keyed by (seed, epoch,
    sample); None without the block. Applied per sample in the loader's workers, or with ``batched: true`` to
    each batch on the training device (:func:`train_loaders`): the same draws, to float32 rounding.

    Raises:
        ConfigError: an unknown key, or with ``batched`` an op that changes a tensor's length (temporal crops).
    """
    block = exp.get("augment")
    if block is None:
        return None
    where = f"experiments.{exp['corpus']}.*.augment"
    check_keys(block, AUGMENT_KEYS, where)
    inputs = {name: features[name] for name in exp["fields"]}
    options = {key: value for key, value in block.items() if key != "batched"}
    augmenter = Augmenter.from_features(inputs, **options)
    if augment_batched(exp):
        try:
            check_batchable(augmenter, inputs)
        except ValueError as error:
            raise ConfigError(f"{where}.batched: {error}") from None
    return augmenter


def augment_batched(exp: dict[str, Any]) -> bool:
    """Whether the run augments whole batches on the training device (``augment: {batched: true}``)."""
    batched = (exp.get("augment") or {}).get("batched", False)
    if not isinstance(batched, bool):
        raise ConfigError(f"experiments.{exp['corpus']}.*.augment.batched must be true or false, got {batched!r}")
    return batched


def few_shot_rows(exp: dict[str, Any], loader: Loader, seed: int) -> np.ndarray | None:
    """The ``label_fraction`` subset of the train rows for one seed (None: the whole split).

    Stratified by :func:`mmdata.samplers.label_fraction` with ``make_rng(seed, "label_fraction")``: each seed
    draws its own subset, and for one seed a smaller fraction's subset lies inside a larger one's.
    """
    fraction = exp.get("label_fraction")
    if fraction is None:
        return None
    if not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(f"experiments.{exp['corpus']}.*.label_fraction must be in (0, 1], got {fraction!r}")
    subsets = label_fraction(loader.shards.index, make_rng(seed, "label_fraction"), fractions=[float(fraction)])
    return subsets[float(fraction)]


def build(exp: dict[str, Any], loader: Loader, seed: int) -> tuple[Any, torch.nn.Module]:
    """(method module, freshly initialised model) for a run block; model keys are checked."""
    method = get_method(exp["method"])
    options = exp.get("model", {})
    check_keys(options, keyword_options(method.build_model) - {"fields"}, f"experiments.*.model ({exp['method']})")
    torch.manual_seed(seed)  # the initial weights are part of the experiment
    return method, method.build_model(loader.shards.features, fields=list(exp["fields"]), **options)


def train_loaders(exp: dict[str, Any], settings: dict[str, Any], seed: int) -> tuple[Any, Any, np.ndarray | None]:
    """``(train, labeled, rows)``: the whole train split, its ``label_fraction`` subset (the same object without
    one) and the subset's rows (None), both augmented as ``augment:`` says.

    Per sample, the loaders' workers augment; with ``batched: true`` they do not, and each batch is moved to
    the device the loop trains on (``train.device``, resolved as :func:`methods.loop.train` does) and augmented
    there by :class:`mmdata.augment.batched.DeviceAugmented`.
    """
    train = open_split(exp, "train", settings, seed)
    augment = run_augmenter(exp, train.shards.features)
    hook = None if augment_batched(exp) else augment
    if hook is not None:
        train = open_split(exp, "train", settings, seed, augment=hook)
    rows = few_shot_rows(exp, train, seed)
    labeled = train if rows is None else open_split(exp, "train", settings, seed, rows=rows, augment=hook)
    if augment is not None and hook is None:
        device = resolve_device(settings.get("device", "auto"))
        on_device = DeviceAugmented(train, augment, device)
        labeled = on_device if rows is None else DeviceAugmented(labeled, augment, device)
        train = on_device
    return train, labeled, rows


def train_seed(params: dict[str, Any], corpus: str, run: str, seed: int) -> dict[str, Any]:
    """Train one seed of run ``experiments.<corpus>.<run>``, save its model, and return its history (losses,
    best epoch, device, amp; no wall-clock figures)."""
    exp, settings = experiment_params(params, corpus, run), train_settings(params, corpus, run)
    train, labeled, rows = train_loaders(exp, settings, seed)
    valid = open_split(exp, "valid", settings, seed)
    method, model = build(exp, train, seed)
    history = fit(method, model, labeled, epochs=settings["epochs"], lr=settings["lr"],
                  weight_decay=settings.get("weight_decay", 0.0), device=settings.get("device", "auto"),
                  amp=settings.get("amp", False), seed=seed, valid_batches=valid,
                  unlabeled_batches=None if rows is None else train, sampler=run_sampler(exp),
                  log=distributed.on_main(lambda line: print(f"train@{corpus}.{run}.seed{seed}: {line}", flush=True)))
    labeled_rows = train.shards.manifest["rows"] if rows is None else len(rows)
    meta = {"experiment": f"{corpus}.{run}", "seed": seed, "labeled_rows": labeled_rows, **exp}
    if distributed.is_main():  # the ranks hold the same weights (DDP); one writer, no torn file
        save_checkpoint(model_path(corpus, run, seed), model, meta)
    # Wall-clock figures differ on every run (they are in the log lines above): the tracked history keeps what
    # the seed determines, so a re-run leaves git clean and DVC sees the same output.
    return _without_wall_clock(history)


def _without_wall_clock(history: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in history.items() if key not in WALL_CLOCK}
    if isinstance(out.get("pretrain"), dict):
        out["pretrain"] = _without_wall_clock(out["pretrain"])
    return out


def curves_csv(histories: dict[str, dict[str, Any]]) -> str:
    """One run's curves as CSV text: epoch, train_loss and valid_loss averaged over its seeds."""
    seeds = list(histories.values())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", "train_loss", "valid_loss"])
    for i, epoch in enumerate(seeds[0]["epoch"]):
        train = np.mean([h["train_loss"][i] for h in seeds])
        valid = [h["valid_loss"][i] for h in seeds if len(h["valid_loss"]) > i]
        writer.writerow([epoch + 1, f"{train:.6f}", f"{np.mean(valid):.6f}" if valid else ""])
    return out.getvalue()


def train_job(params: dict[str, Any], corpus: str, run: str, seed: int) -> dict[str, Any]:
    """:func:`train_seed` with the run's ``threads`` torch threads (default 1) in this process."""
    torch.set_num_threads(int(train_settings(params, corpus, run).get("threads", 1)))
    return train_seed(params, corpus, run, seed)


def train_jobs(params: dict[str, Any], corpus: str, jobs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """The histories of (run, seed) ``jobs``, in order: on CPU in ``cores // threads`` processes at once
    (:func:`methods.parallel.run_parallel`), else (a GPU, or one job) one after another in this process.

    Why a fixed thread count: torch's CPU reductions depend on it (a NYUv2 mini run ends at a valid loss of 0.29
    with one thread and 1.80 with two), so a run's numbers do not depend on the core count, pool size or suite.
    Under DDP each job uses every rank: one job at a time.
    """
    if distributed.active():
        return [train_job(params, corpus, run, seed) for run, seed in jobs]
    settings = [train_settings(params, corpus, run) for run, _ in jobs]
    threads = max(int(s.get("threads", 1)) for s in settings) if settings else 1
    on_cpu = all(resolve_device(s.get("device", "auto")).type == "cpu" for s in settings)
    # one GPU is used by one process; the stage's process has run no torch computation before the fork
    processes = available_cores() // threads if on_cpu else 1
    return run_parallel(train_job, [(params, corpus, run, seed) for run, seed in jobs], processes)


def relaunch(params: dict[str, Any], corpus: str) -> int:
    """The torchrun processes to start this stage in: ``train.nproc`` (default 1; stage-wide, so a run's
    ``train`` block may not set it) when above 1 and this process is not a torchrun worker already, else 0.

    Raises:
        ConfigError: ``train.nproc`` not an integer >= 1, or set under ``experiments.<corpus>.<run>.train``.
    """
    for run in corpus_runs(params, corpus):
        if "nproc" in experiment_params(params, corpus, run).get("train", {}):
            raise ConfigError(f"experiments.{corpus}.{run}.train.nproc in params.yaml: set train.nproc (stage-wide)")
    nproc = params.get("train", {}).get("nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"train.nproc in params.yaml must be an integer >= 1, got {nproc!r}")
    return nproc if nproc > 1 and not distributed.under_torchrun() else 0


def main(argv: list[str] | None = None) -> int | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    args = parser.parse_args(argv)
    params = load_params()
    nproc = relaunch(params, args.corpus)
    if nproc:
        return distributed.torchrun("pipelines.train", [args.corpus], nproc)
    with distributed.process_group(resolve_device(params.get("train", {}).get("device", "auto"))):  # torchrun's
        train_corpus(params, args.corpus)
    return None


def train_corpus(params: dict[str, Any], corpus: str) -> None:
    """Train every (run, seed) job of ``corpus`` and write its histories and curves (rank 0 only under DDP)."""
    jobs = [(run, seed) for run in corpus_runs(params, corpus)
            for seed in run_seeds(params, train_settings(params, corpus, run))]
    histories: dict[str, dict[str, Any]] = {}
    for (run, seed), history in zip(jobs, train_jobs(params, corpus, jobs)):
        histories.setdefault(run, {})[str(seed)] = history
    if distributed.is_main():
        write_histories(corpus, histories)


def write_histories(corpus: str, histories: dict[str, dict[str, Any]]) -> None:
    """``results/curves/<corpus>/<run>.csv`` per run, then ``results/history/<corpus>.json``."""
    curves = curves_dir(corpus)
    curves.mkdir(parents=True, exist_ok=True)
    for stale in curves.glob("*.csv"):  # runs no longer configured (a suite switch) leave no curve behind
        stale.unlink()
    for run, runs in histories.items():
        (curves / f"{run}.csv").write_text(curves_csv(runs))
    path = history_path(corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(histories, indent=1) + "\n")  # last: its presence means every run finished


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.train", main))
