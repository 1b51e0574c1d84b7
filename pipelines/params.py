"""params.yaml loading with the checks that turn a typo into an immediate, named error."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

# From the ground-floor module, not mmdata.corpora: importing that package imports every corpus reader,
# which would make every stage that reads params.yaml depend on all of them (see tests/test_dvc_graph.py).
from mmdata.errors import ConfigError, check_names

PARAMS = Path("params.yaml")
#: Every key here is read by a stage (tests/test_dvc_graph.py checks it): no key that configures nothing.
TOP_LEVEL = {"seed", "suite", "corpora", "train", "evaluate", "fidelity", "experiments"}
CORPUS_KEYS = {"root", "synth", "reader", "shard"}
#: A run block: what trains (method, fields, model, train, label_fraction, samplers: the negatives drawn per batch,
#: augment: the training augmentation), which suite runs it, what its
#: robustness is compared with (baseline: another run of the corpus) and where the report shows it (table).
EXPERIMENT_KEYS = {"method", "fields", "model", "train", "label_fraction", "samplers", "augment", "suite", "baseline",
                   "table"}
#: ``suite`` at the top level picks the runs trained: "quick" (dvc repro's default, the runs marked quick or
#: unmarked) or "full" (every run: the seeds' tables; ``dvc exp run -S suite=full``).
SUITES = ("quick", "full")


def keyword_options(fn: Callable[..., Any]) -> set[str]:
    """Names of the keyword-only parameters of ``fn`` (the options a params.yaml block may set)."""
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}


def check_keys(given: dict[str, Any], allowed: set[str], where: str) -> None:
    """Raise ConfigError naming unknown keys (a renamed one with its new name), the valid ones, and where."""
    check_names(given, allowed, "key(s)", f"in {where} of params.yaml")


def load_params(path: Path = PARAMS) -> dict[str, Any]:
    """params.yaml as a dict, with its top-level, corpus and experiment keys checked."""
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the repository root")
    params = yaml.safe_load(path.read_text()) or {}
    check_keys(params, TOP_LEVEL, "the top level")
    for name, block in params.get("corpora", {}).items():
        check_keys(block, CORPUS_KEYS, f"corpora.{name}")
    check_keys(params.get("experiments", {}), set(params.get("corpora", {})),
               "experiments (one block of runs per configured corpus)")
    _check_suite(params.get("suite", "quick"), "suite")
    for corpus, runs in params.get("experiments", {}).items():
        for run, block in (runs or {}).items():
            check_keys(block, EXPERIMENT_KEYS, f"experiments.{corpus}.{run}")
            _check_suite(block.get("suite", "quick"), f"experiments.{corpus}.{run}.suite")
            if block.get("baseline") is not None and block["baseline"] not in runs:
                raise ConfigError(f"experiments.{corpus}.{run}.baseline in params.yaml names {block['baseline']!r}, "
                                  f"not a run of {corpus}; runs: {sorted(runs)}")
    return params


def _check_suite(value: Any, where: str) -> None:
    if value not in SUITES:
        raise ConfigError(f"{where} in params.yaml must be one of {list(SUITES)}, got {value!r}")


def _block(params: dict[str, Any], section: str, what: str, name: str) -> dict[str, Any]:
    try:
        return params[section][name]
    except KeyError:
        raise ConfigError(f"{what} {name!r} is not configured under {section}: in params.yaml; "
                          f"configured: {sorted(params.get(section, {}))}") from None


def corpus_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``corpora.<name>`` block, or ConfigError listing the configured corpora."""
    return _block(params, "corpora", "corpus", name)


def corpus_runs(params: dict[str, Any], corpus: str) -> dict[str, dict[str, Any]]:
    """The runs of ``experiments.<corpus>`` in the selected suite (run name -> run block), or ConfigError.

    Suite "full" selects every run; "quick" (the default) the runs whose own ``suite`` is "quick" or unset.
    """
    runs = _block(params, "experiments", "corpus", corpus)
    if not runs:
        raise ConfigError(f"experiments.{corpus} in params.yaml has no runs; add e.g. "
                          f"fused: {{method: late_fusion, fields: [...]}}")
    if params.get("suite", "quick") == "full":
        return runs
    return {run: block for run, block in runs.items() if block.get("suite", "quick") == "quick"}


def run_seeds(params: dict[str, Any], settings: dict[str, Any]) -> list[int]:
    """The seeds a run trains with: ``seed, seed + 1, ...``, ``settings["seeds"]`` of them (default 1)."""
    count = int(settings.get("seeds", 1))
    if count < 1:
        raise ConfigError(f"train.seeds in params.yaml must be >= 1, got {count}")
    return [int(params.get("seed", 0)) + i for i in range(count)]


def experiment_params(params: dict[str, Any], corpus: str, run: str) -> dict[str, Any]:
    """Run ``experiments.<corpus>.<run>`` with its corpus filled in, or ConfigError listing the runs."""
    runs = _block(params, "experiments", "corpus", corpus) or {}
    if run not in runs:
        raise ConfigError(f"run {run!r} is not configured under experiments.{corpus} in params.yaml; "
                          f"configured: {sorted(runs)}")
    return {"corpus": corpus, **runs[run]}


def shards_dir(name: str) -> Path:
    """Where corpus ``name``'s shards live (the DVC output of its shard stage)."""
    return Path("data/shards") / name


def models_dir(corpus: str) -> Path:
    """Where the trained models of corpus ``corpus``'s runs live: ``<run>/model.pt`` (train@<corpus> output)."""
    return Path("results/models") / corpus


def history_path(corpus: str) -> Path:
    """Training history of every run of ``corpus``: run -> seed -> fit's history dict (train@<corpus> output)."""
    return Path("results/history") / f"{corpus}.json"


def curves_dir(corpus: str) -> Path:
    """Per-run training curves of ``corpus`` (``<run>.csv``: epoch, mean losses over seeds), for ``dvc plots``."""
    return Path("results/curves") / corpus


def model_path(corpus: str, run: str, seed: int) -> Path:
    """The weights of one seed of a run (train@<corpus> output)."""
    return models_dir(corpus) / run / f"seed{seed}.pt"


def figures_dir(corpus: str) -> Path:
    """Pictures of the runs of ``corpus`` whose method draws some (``<run>/*.png``; evaluate@<corpus> output)."""
    return Path("results/figures") / corpus


def scores_path(corpus: str) -> Path:
    """Per-seed metrics and robustness curves of every run of ``corpus`` (evaluate@<corpus> output)."""
    return Path("results/scores") / f"{corpus}.json"


def metrics_path(corpus: str) -> Path:
    """Test metrics of every run of ``corpus``: run -> metrics (evaluate@<corpus> output, a DVC metrics file)."""
    return Path("results/metrics") / f"{corpus}.json"
