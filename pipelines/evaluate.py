"""Stage ``evaluate@<corpus>``: test-split metrics of every trained run and seed, robustness under corruption,
and unimodal-query retrieval -> results/metrics/<corpus>.json and results/scores/<corpus>.json.

The metrics file maps run -> mean over seeds of each metric, its ``<metric>_std`` and ``seeds``; DVC declares it
a metrics file, so ``dvc metrics diff`` compares runs across experiments. The scores file keeps each seed's
metrics and the mean robustness curves (what the report's tables and plot read).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from methods.loop import evaluate, load_checkpoint
from methods.retrieval import unimodal_retrieval
from mmdata.corpora import get_corpus
from mmdata.errors import run_guarded
from mmdata.metrics import HEADLINE, METRICS
from mmdata.metrics.robustness import LEVELS
from pipelines.params import (corpus_runs, experiment_params, figures_dir, load_params, metrics_path, model_path,
                              run_seeds, scores_path)
from pipelines.robustness import robustness_curves, robustness_summary
from pipelines.train import build, open_split, train_settings

#: Test batch size: 2-3x faster than training-size batches for the CNN corpora, same predictions.
EVAL_BATCH = 256
#: Tasks whose targets can be matched exactly, so unimodal-query retrieval is defined.
RETRIEVAL_TASKS = ("classification", "multilabel")


def evaluate_seed(params: dict[str, Any], corpus: str, run: str, seed: int, loader: Any,
                  batches: list[dict[str, Any]], robustness: bool) -> tuple[dict[str, float], dict[str, Any] | None]:
    """(metrics, robustness curves or None) of one seed of a run from its saved model, on decoded test
    ``batches``; the curves only when ``robustness``."""
    exp, task = experiment_params(params, corpus, run), get_corpus(corpus).task
    method, model = build(exp, loader, seed)
    load_checkpoint(model_path(corpus, run, seed), model)
    pred, truth, keys = evaluate(method, model, batches)
    metrics = {**METRICS[task](pred, truth), "samples": len(keys),
               "parameters": sum(p.numel() for p in model.parameters())}
    if task in RETRIEVAL_TASKS and len(exp["fields"]) > 1 and hasattr(model, "fusion"):
        metrics.update(unimodal_retrieval(model, batches))
    if hasattr(method, "describe"):  # model-level figures, e.g. CM-VQVAE's complementarity
        metrics.update(method.describe(model))
    if not robustness:
        return metrics, None
    if hasattr(method, "figures"):  # pictures users look at, e.g. CM-VQVAE's reconstructions
        method.figures(model, batches[0], figures_dir(corpus) / run)
    name = HEADLINE[task][0]
    levels = params.get("evaluate", {}).get("levels", list(LEVELS))
    curves = robustness_curves(method, model, batches, fields=list(exp["fields"]), levels=levels, seed=seed,
                               metric=lambda p, t: METRICS[task](p, t)[name])
    return metrics, curves


def evaluate_corpus(params: dict[str, Any], corpus: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics file, scores file) contents for every run of ``corpus`` in the selected suite.

    Robustness is scored on each run's first seed (the same seed for a run and its baseline): on 2 cores the
    curves of every seed cost more than the whole training of the quick suite.
    """
    runs = corpus_runs(params, corpus)
    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    curves: dict[str, dict[str, Any]] = {}
    for run in runs:
        exp, settings = experiment_params(params, corpus, run), train_settings(params, corpus, run)
        seeds = run_seeds(params, settings)
        # Eval-mode predictions do not depend on the batch size: larger batches cost fewer passes.
        loader = open_split(exp, "test", {**settings, "batch_size": EVAL_BATCH}, seeds[0])
        batches = list(loader)  # decoded once for every seed, corruption and level
        per_seed[run] = {}
        for seed in seeds:
            per_seed[run][seed], found = evaluate_seed(params, corpus, run, seed, loader, batches, seed == seeds[0])
            if found is not None:
                curves[run] = found
            print(f"evaluate@{corpus}.{run}.seed{seed}: {_headline(per_seed[run][seed], corpus)}", flush=True)
    levels = params.get("evaluate", {}).get("levels", list(LEVELS))
    higher = HEADLINE[get_corpus(corpus).task][1]
    metrics = {run: _mean_std(seeds) for run, seeds in per_seed.items()}
    for run, block in runs.items():
        against = curves.get(block["baseline"]) if block.get("baseline") else None
        robust = robustness_summary(curves[run], levels, higher, baseline_curves=against)
        metrics[run].update({k: round(float(v), 6) for k, v in robust.items()})
    scores = {run: {"seeds": {str(s): _rounded(m) for s, m in per_seed[run].items()},
                    "levels": levels, "curves": _rounded_curves(curves[run])} for run in runs}
    return metrics, scores


def _headline(metrics: dict[str, float], corpus: str) -> str:
    name = HEADLINE[get_corpus(corpus).task][0]
    return f"{name}={metrics[name]:.4f} samples={metrics['samples']}"


def _mean_std(per_seed: dict[int, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the seeds, ``<metric>_std`` (population std; 0 for one seed) and ``seeds``."""
    out: dict[str, float] = {}
    for name in sorted(set.intersection(*(set(m) for m in per_seed.values()))):
        values = np.array([m[name] for m in per_seed.values()], dtype=np.float64)
        if name in ("samples", "parameters"):  # counts, the same for every seed
            out[name] = int(values.max())
            continue
        out[name] = round(float(values.mean()), 6)
        out[f"{name}_std"] = round(float(values.std()), 6)
    out["seeds"] = len(per_seed)
    return out


def _rounded_curves(curves: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    return {field: {kind: [round(float(v), 6) for v in values] for kind, values in kinds.items()}
            for field, kinds in curves.items()}


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in sorted(metrics.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    args = parser.parse_args(argv)
    figures_dir(args.corpus).mkdir(parents=True, exist_ok=True)  # a DVC output, even when no method draws
    metrics, scores = evaluate_corpus(load_params(), args.corpus)
    for name, text in ((scores_path(args.corpus), scores), (metrics_path(args.corpus), metrics)):
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_text(json.dumps(text, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.evaluate", main))
