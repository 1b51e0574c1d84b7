"""Stage ``evaluate@<corpus>``: test-split metrics of every trained run -> results/metrics/<corpus>.json.

The metrics file maps run -> metrics (the corpus task's metrics plus ``samples``); DVC declares it a metrics
file, so ``dvc metrics diff`` compares runs across experiments.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from methods.loop import evaluate, load_checkpoint
from mmdata.errors import run_guarded
from mmdata.corpora import get_corpus
from mmdata.metrics import METRICS
from pipelines.params import corpus_runs, experiment_params, load_params, metrics_path, models_dir
from pipelines.train import build, open_split, train_settings


def evaluate_run(params: dict[str, Any], corpus: str, run: str) -> dict[str, float]:
    """Test metrics of run ``experiments.<corpus>.<run>`` from its saved model, rounded to 6 digits."""
    exp, seed = experiment_params(params, corpus, run), params.get("seed", 0)
    test = open_split(exp, "test", train_settings(params, corpus, run), seed)
    method, model = build(exp, test, seed)
    load_checkpoint(models_dir(corpus) / run / "model.pt", model)
    pred, truth, keys = evaluate(method, model, test)
    metrics = {k: round(v, 6) for k, v in METRICS[get_corpus(corpus).task](pred, truth).items()}
    return {**metrics, "samples": len(keys)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    args = parser.parse_args(argv)
    params = load_params()
    metrics = {}
    for run in corpus_runs(params, args.corpus):
        metrics[run] = evaluate_run(params, args.corpus, run)
        print(f"evaluate@{args.corpus}.{run}: {metrics[run]}", flush=True)
    path = metrics_path(args.corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.evaluate", main))
