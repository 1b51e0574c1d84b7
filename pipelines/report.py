"""Stage ``report``: results/report.md (tables) and results/report.png, results/robustness.png (plots).

Read from the evaluate stages' results/metrics/<corpus>.json (mean and std over seeds) and
results/scores/<corpus>.json (robustness curves), and the fidelity stage's results/fidelity/<check>.json:

- per corpus, every run: its task metrics as mean +- std over seeds;
- the seeds' comparisons shaped like the papers' tables: runs carrying ``table: [name, row, column]`` in
  params.yaml fill one cell each (e.g. ReFNet's Table 2: rows = fusion, columns = baseline / ReFNet /
  ReFNet_MS);
- robustness: ProFusion's ROBUSTAUC against the run's ``baseline`` and MultiBench's raw area, averaged over
  the run's fields, per corruption;
- the controlled checks beside the papers' claims.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend
import numpy as np  # noqa: E402

from mmdata.corpora import get_corpus  # noqa: E402
from mmdata.errors import run_guarded  # noqa: E402
from mmdata.metrics import HEADLINE  # noqa: E402
from pipelines.params import corpus_runs, load_params, metrics_path, scores_path  # noqa: E402

RESULTS = Path("results")
#: The metrics the paper-shaped tables show per task (the seeds' own columns where they exist).
TABLE_METRICS = {"classification": ("accuracy", "auroc"), "multilabel": ("f1_macro", "f1_micro"),
                 "regression": ("acc7", "non0_acc2"), "forecast": ("mse",), "detection": ("map25",),
                 "segmentation": ("miou40",)}
#: Model-level figures a method's ``describe`` adds to its metrics, shown in the tables beside the task's.
DESCRIBED = ("zeta",)
CORRUPTIONS = ("noise", "drop")


def collect(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``<corpus>.<run>`` -> {corpus, run, method, fields, table, baseline, metrics, curves} for every run of
    the selected suite."""
    rows = {}
    for corpus in params["experiments"]:
        metrics = json.loads(metrics_path(corpus).read_text())
        scores = json.loads(scores_path(corpus).read_text())
        for run, exp in corpus_runs(params, corpus).items():
            rows[f"{corpus}.{run}"] = {"corpus": corpus, "run": run, "method": exp["method"],
                                       "fields": list(exp["fields"]), "tables": table_cells(exp.get("table")),
                                       "baseline": exp.get("baseline"), "metrics": metrics[run],
                                       "scores": scores[run]}
    return rows


def table_cells(table: list[Any] | None) -> list[tuple[str, str, str]]:
    """A run's ``table:`` as a list of (table, row, column) cells: one ``[name, row, column]``, or a list of them
    for a run that fills cells of several papers' tables (e.g. late fusion is MDM's L_empty and
    TupleInfoNCE's scratch: trained once, not once per table)."""
    if not table:
        return []
    return [tuple(c) for c in (table if isinstance(table[0], (list, tuple)) else [table])]


def cell(metrics: dict[str, Any], name: str) -> str:
    """``mean +- std`` of one metric (the bare value for one seed; blank when absent)."""
    if name not in metrics:
        return ""
    std = metrics.get(f"{name}_std")
    return f"{metrics[name]:.4f}" if not std else f"{metrics[name]:.4f} ± {std:.4f}"


def _task_metrics(rows: list[dict[str, Any]]) -> list[str]:
    names = {m for r in rows for m in r["metrics"]}
    return sorted(m for m in names if not m.endswith("_std") and not m.startswith(("robust", "multibench"))
                  and m not in ("samples", "seeds", "parameters"))


def corpus_tables(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One markdown table per corpus: one line per run, one column per task metric (mean +- std over seeds)."""
    lines = []
    for corpus in sorted({r["corpus"] for r in rows.values()}):
        mine = [r for r in rows.values() if r["corpus"] == corpus]
        names = _task_metrics(mine)
        lines += [f"### {corpus}", "", "| run | method | fields | seeds | parameters | " + " | ".join(names) + " |",
                  "|---" * (5 + len(names)) + "|"]
        for r in mine:
            m = r["metrics"]
            lines.append(f"| {r['run']} | {r['method']} | {', '.join(r['fields'])} | {m.get('seeds', 1)} | "
                         f"{m.get('parameters', '')} | " + " | ".join(cell(m, n) for n in names) + " |")
        lines.append("")
    return lines


def comparison_tables(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The papers' comparisons: per (corpus, table name) a grid of rows x columns, one metric group per cell."""
    lines = []
    placed = [(r, c) for r in rows.values() for c in r["tables"]]  # (run, its cell), every cell of every run
    for corpus, name in sorted({(r["corpus"], c[0]) for r, c in placed}):
        here = [(r, c) for r, c in placed if r["corpus"] == corpus and c[0] == name]
        mine = [r for r, _ in here]
        row_names = list(dict.fromkeys(c[1] for _, c in here))
        columns = list(dict.fromkeys(c[2] for _, c in here))
        if len(columns) < 2:  # no comparison (e.g. the quick suite holds only the shared baseline of a table)
            continue
        # The task's metrics and model-level figures, where some run of the table has them (a 6-class task has
        # no binary AUROC; only CM-VQVAE has a complementarity zeta).
        shown = [m for m in (*TABLE_METRICS[get_corpus(corpus).task], *DESCRIBED)
                 if any(m in r["metrics"] for r in mine)]
        lines += [f"### {corpus}: {name} ({' / '.join(shown)}, mean ± std over seeds)", "",
                  "| | " + " | ".join(columns) + " |", "|---" * (1 + len(columns)) + "|"]
        for row in row_names:
            cells = []
            for column in columns:
                hit = [r for r, c in here if c[1] == row and c[2] == column]
                cells.append(" / ".join(cell(hit[0]["metrics"], m) for m in shown) if hit else "")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def robustness_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Per run: ROBUSTAUC against its baseline and MultiBench's area, mean over its fields, per corruption, and
    the parameter overhead over the baseline (Progressive Fusion's Table 10)."""
    lines = ["| run | baseline | parameters vs baseline | " +
             " | ".join(f"robust_auc {c} | multibench {c}" for c in CORRUPTIONS) + " |",
             "|---" * (3 + 2 * len(CORRUPTIONS)) + "|"]
    for key, r in rows.items():
        base = rows.get(f"{r['corpus']}.{r['baseline']}") if r["baseline"] else None
        size = (f"{r['metrics']['parameters'] / base['metrics']['parameters'] - 1:+.1%}"
                if base and base["metrics"].get("parameters") else "")
        values = []
        for kind in CORRUPTIONS:
            for prefix in ("robust_auc", "multibench_robustness"):
                found = [v for m, v in r["metrics"].items()
                         if m.startswith(f"{prefix}_") and m.endswith(f"_{kind}")]
                values.append(f"{np.mean(found):.4f}" if found else "")
        lines.append(f"| {key} | {r['baseline'] or ''} | {size} | " + " | ".join(values) + " |")
    return lines + [""]


def report(rows: dict[str, dict[str, Any]], checks: list[str]) -> str:
    """The whole report as markdown."""
    return "\n".join([
        "# mmdata report", "",
        "Test-split metrics, mean ± std over each run's seeds (population std). Plots: results/report.png "
        "(headline metric), results/robustness.png (curves); training curves: `dvc plots show`.", "",
        "## The seeds' comparisons", "", *comparison_tables(rows),
        "## Every run", "", *corpus_tables(rows),
        "## Robustness", "",
        "ROBUSTAUC (Progressive Fusion C.1: area between the run's and its baseline's curves, sign flipped for "
        "errors) and MultiBench's raw trapezoid area of the run's own curve; both on each run's first seed, "
        "averaged over the run's fields. Corruptions: the augmenter's noise kernel and modality drop, levels as "
        "in params.yaml.", "",
        *robustness_table(rows),
        "## Controlled checks (fidelity)", "", fidelity_table(RESULTS / "fidelity", checks), ""])


def fidelity_table(results_dir: Path, order: list[str]) -> str:
    """A markdown table of every check result in ``results_dir``: check, what we measured, what the paper
    claims, passed (``yes``, or ``no`` with the criteria that fell short), in ``order`` (params.yaml's
    ``fidelity`` block) then any other result; a folder without results gives a one-line note instead.

    Reads only the JSON files, so the report stage does not run (or depend on) the checks' code.
    """
    paths = {p.stem: p for p in Path(results_dir).glob("*.json")}
    names = [n for n in order if n in paths] + sorted(set(paths) - set(order))
    if not names:
        return f"No controlled checks in {results_dir} (run `python -m pipelines.fidelity <check>`).\n"
    lines = ["| check | what we measured | what the paper claims | passed |", "|---|---|---|---|"]
    for name in names:
        result = json.loads(paths[name].read_text())
        failed = [c for c, ok in result.get("passed", {}).items() if not ok]
        verdict = "yes" if not failed else "no: " + ", ".join(failed)
        offset = f" (seed offset {result['seed_offset']})" if result.get("seed_offset") else ""
        measured, claim = _cell(result.get("measured", "")), _cell(result["paper"]["claim"])
        lines.append(f"| {name}{offset} | {measured} | {claim} | {verdict} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """One bar panel per corpus with its task's headline metric, error bars = std over seeds."""
    corpora = sorted({r["corpus"] for r in rows.values()})
    cols = 2
    rows_ = -(-len(corpora) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(11, 3.0 * rows_), squeeze=False)
    for ax in axes.flat[len(corpora):]:
        ax.axis("off")
    for ax, corpus in zip(axes.flat, corpora):
        metric = HEADLINE[get_corpus(corpus).task][0]
        mine = [r for r in rows.values() if r["corpus"] == corpus]
        means = [r["metrics"][metric] for r in mine]
        ax.bar(range(len(mine)), means, yerr=[r["metrics"].get(f"{metric}_std", 0.0) for r in mine],
               color="tab:blue", capsize=3)
        ax.set_xticks(range(len(mine)), [r["run"] for r in mine], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{corpus}: {metric}", fontsize=9)
        ax.set_ylim(0, max(1.0, 1.1 * max(means)))  # an error (forecast MSE) may pass 1
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_robustness(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Per corpus: the headline metric against the drop level, averaged over each run's fields."""
    corpora = sorted({r["corpus"] for r in rows.values()})
    cols = 4
    fig, axes = plt.subplots(-(-len(corpora) // cols), cols, figsize=(14, 3.2 * -(-len(corpora) // cols)),
                             squeeze=False)
    for ax in axes.flat[len(corpora):]:
        ax.axis("off")
    for ax, corpus in zip(axes.flat, corpora):
        for r in (r for r in rows.values() if r["corpus"] == corpus):
            curves = [c["drop"] for c in r["scores"]["curves"].values() if "drop" in c]
            if curves:
                ax.plot(r["scores"]["levels"], np.mean(curves, axis=0), marker=".", label=r["run"])
        ax.set_title(f"{corpus}: {HEADLINE[get_corpus(corpus).task][0]} vs drop", fontsize=9)
        ax.set_xlabel("share of samples with a field dropped", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    params = load_params()
    rows = collect(params)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report.md").write_text(report(rows, list(params.get("fidelity", {}))) + "\n")
    plot(rows, RESULTS / "report.png")
    plot_robustness(rows, RESULTS / "robustness.png")
    print((RESULTS / "report.md").read_text())


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.report", main))
