"""Stage ``evaluate@<experiment>``: test-split metrics of a trained experiment -> results/exp/<name>/metrics.json."""
from __future__ import annotations

import argparse
import json

from methods.loop import evaluate, load_checkpoint
from mmdata.corpora import get_corpus
from mmdata.metrics import METRICS
from pipelines.params import experiment_dir, experiment_params, load_params
from pipelines.train import build, open_split, train_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment")
    args = parser.parse_args(argv)
    params = load_params()
    exp, seed = experiment_params(params, args.experiment), params.get("seed", 0)
    test = open_split(exp, "test", train_settings(params, args.experiment), seed)
    method, model = build(exp, test, seed)
    out = experiment_dir(args.experiment)
    load_checkpoint(out / "model.pt", model)
    pred, truth, keys = evaluate(method, model, test)
    metrics = {k: round(v, 6) for k, v in METRICS[get_corpus(exp["corpus"]).task](pred, truth).items()}
    metrics["samples"] = len(keys)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    print(f"evaluate@{args.experiment}: {metrics}")


if __name__ == "__main__":
    main()
