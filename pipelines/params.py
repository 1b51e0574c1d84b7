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
TOP_LEVEL = {"seed", "corpora", "train", "experiments"}
CORPUS_KEYS = {"root", "synth", "reader", "shard"}
EXPERIMENT_KEYS = {"method", "fields", "model", "train"}


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
    for corpus, runs in params.get("experiments", {}).items():
        for run, block in (runs or {}).items():
            check_keys(block, EXPERIMENT_KEYS, f"experiments.{corpus}.{run}")
    return params


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
    """The ``experiments.<corpus>`` block (run name -> run block), or ConfigError listing the configured ones."""
    runs = _block(params, "experiments", "corpus", corpus)
    if not runs:
        raise ConfigError(f"experiments.{corpus} in params.yaml has no runs; add e.g. "
                          f"fused: {{method: late_fusion, fields: [...]}}")
    return runs


def experiment_params(params: dict[str, Any], corpus: str, run: str) -> dict[str, Any]:
    """Run ``experiments.<corpus>.<run>`` with its corpus filled in, or ConfigError listing the runs."""
    runs = corpus_runs(params, corpus)
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
    """Training history of every run of ``corpus``: run -> fit's history dict (train@<corpus> output)."""
    return Path("results/history") / f"{corpus}.json"


def metrics_path(corpus: str) -> Path:
    """Test metrics of every run of ``corpus``: run -> metrics (evaluate@<corpus> output, a DVC metrics file)."""
    return Path("results/metrics") / f"{corpus}.json"
