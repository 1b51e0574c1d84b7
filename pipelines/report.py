"""Stage ``report``: one comparison table (results/report.md) and a plot (results/report.png) of the test
metrics of every run, read from results/metrics/<corpus>.json (the evaluate stages' DVC metrics files)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend

from mmdata.errors import run_guarded  # noqa: E402
from mmdata.corpora import get_corpus  # noqa: E402
from pipelines.params import load_params, metrics_path  # noqa: E402

RESULTS = Path("results")
#: The metric each task's plot shows.
HEADLINE = {"classification": "accuracy", "regression": "non0_acc2", "multilabel": "f1_micro",
            "detection": "map25", "segmentation": "miou40", "forecast": "mse"}


def collect(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``<corpus>.<run>`` -> {corpus, run, method, fields, metrics} for every configured run."""
    rows = {}
    for corpus, runs in params["experiments"].items():
        metrics = json.loads(metrics_path(corpus).read_text())
        for run, exp in runs.items():
            rows[f"{corpus}.{run}"] = {"corpus": corpus, "run": run, "method": exp["method"],
                                       "fields": list(exp["fields"]), "metrics": metrics[run]}
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table per corpus: one line per run, one column per metric."""
    lines = ["# mmdata report", "", "Test-split metrics per run (fused against each single modality).", ""]
    for corpus in sorted({r["corpus"] for r in rows.values()}):
        mine = {n: r for n, r in rows.items() if r["corpus"] == corpus}
        names = sorted({m for r in mine.values() for m in r["metrics"]})
        lines += [f"## {corpus}", "", "| run | method | fields | " + " | ".join(names) + " |",
                  "|---" * (3 + len(names)) + "|"]
        for r in mine.values():
            values = " | ".join(_fmt(r["metrics"].get(m)) for m in names)
            lines.append(f"| {r['run']} | {r['method']} | {', '.join(r['fields'])} | {values} |")
        lines.append("")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """One bar panel per corpus with its task's headline metric."""
    corpora = sorted({r["corpus"] for r in rows.values()})
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.5 * len(corpora), 3.5), squeeze=False)
    for ax, corpus in zip(axes[0], corpora):
        metric = HEADLINE[get_corpus(corpus).task]
        mine = {r["run"]: r["metrics"][metric] for r in rows.values() if r["corpus"] == corpus}
        ax.bar(range(len(mine)), list(mine.values()), color="tab:blue")
        ax.set_xticks(range(len(mine)), list(mine), rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{corpus}: {metric}")
        ax.set_ylim(0, max(1.0, 1.1 * max(mine.values())))  # an error (forecast MSE) may pass 1
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    rows = collect(load_params())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report.md").write_text(table(rows) + "\n")
    plot(rows, RESULTS / "report.png")
    print((RESULTS / "report.md").read_text())


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.report", main))
