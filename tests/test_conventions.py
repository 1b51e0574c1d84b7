"""Convention tests: the registries, params.yaml, dvc.yaml and the modules on disk agree (design.md section 10).

One name everywhere: a corpus's registry key == ``Corpus.name`` == ``mmdata/corpora/<name>.py`` == synth
generator key == ``mmdata/synth/<name>.py`` == ``corpora.<name>`` in params.yaml == DVC foreach item. Every
params.yaml block only sets keyword arguments the code it configures accepts, and every dvc.yaml stage declares
as deps the code its entry point imports.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from methods import METHODS
from mmdata.corpora import CORPORA
from mmdata.metrics import METRICS
from mmdata.shards.build import shard_corpus
from mmdata.synth import SYNTHS
from mmdata.types import field_modality
from pipelines.params import CORPUS_KEYS, EXPERIMENT_KEYS, TOP_LEVEL, keyword_options
from pipelines.train import TRAIN_KEYS

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = ("synth", "shard", "train", "evaluate", "report")
#: Tiny synthetic sizes, enough for ``features(root)`` (which may depend on the files found).
TINY = {"avmnist": {"train": 12, "test": 1}, "mosi": {"train": 1, "valid": 1, "test": 1}}
#: Splits the train/evaluate stages open.
PIPELINE_SPLITS = {"train", "valid", "test"}


@pytest.fixture(scope="module")
def corpus_features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """corpus -> its features as read (with the params.yaml reader options) from a tiny synthetic corpus."""
    base = tmp_path_factory.mktemp("conventions")
    features = {}
    for name, generate in SYNTHS.items():
        root = generate(base / name, seed=0, **TINY.get(name, {}))
        features[name] = CORPORA[name].features(root, **PARAMS["corpora"].get(name, {}).get("reader", {}))
    return features


# --- one name everywhere ---


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_corpus_name_module_synth_and_params_agree(name):
    corpus = CORPORA[name]
    assert corpus.name == name
    assert (REPO / "mmdata" / "corpora" / f"{name}.py").is_file()
    # The registry entry is the corpus module's own; its functions live there or in a reader corpora share
    # (MOSI and MOSEI bind mmdata.corpora.affect.entry.AffectReader to their spec).
    assert importlib.import_module(f"mmdata.corpora.{name}").CORPUS is corpus
    assert corpus.iter_samples.__module__ in (f"mmdata.corpora.{name}", "mmdata.corpora.affect.entry")
    assert corpus.features.__module__ == corpus.iter_samples.__module__
    assert name in SYNTHS and (REPO / "mmdata" / "synth" / f"{name}.py").is_file()
    assert SYNTHS[name].__module__ == f"mmdata.synth.{name}"
    assert name in PARAMS["corpora"], f"corpora.{name} missing from params.yaml"


def test_registries_and_params_list_the_same_corpora():
    modules = {p.stem for p in (REPO / "mmdata" / "corpora").glob("*.py")} - {"__init__", "base", "check"}
    synth_modules = {p.stem for p in (REPO / "mmdata" / "synth").glob("*.py")} - {"__init__"}
    assert set(CORPORA) == set(SYNTHS) == set(PARAMS["corpora"]) == modules == synth_modules


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_module_and_interface(name):
    method = METHODS[name]
    assert method.__name__ == f"methods.{name}" and (REPO / "methods" / f"{name}.py").is_file()
    for fn in ("build_model", "training_step", "predict", "embed"):
        assert callable(getattr(method, fn, None)), f"methods.{name} lacks {fn}"
    assert "fields" in keyword_options(method.build_model)


# --- params.yaml keys == keyword arguments of the code they configure ---


def test_params_top_level_keys():
    assert set(PARAMS) <= TOP_LEVEL
    assert all(set(block) <= CORPUS_KEYS for block in PARAMS["corpora"].values())
    assert set(PARAMS["experiments"]) <= set(PARAMS["corpora"])
    assert all(set(block) <= EXPERIMENT_KEYS for runs in PARAMS["experiments"].values() for block in runs.values())


@pytest.mark.parametrize("name", sorted(PARAMS["corpora"]))
def test_corpus_params_blocks_are_keyword_options(name):
    block = PARAMS["corpora"][name]
    assert set(block.get("reader", {})) <= CORPORA[name].options()
    assert set(block.get("synth", {})) <= keyword_options(SYNTHS[name])
    assert set(block.get("shard", {})) <= keyword_options(shard_corpus) - {"reader", "progress"}
    assert "root" in block


def test_train_keys_are_loop_and_loader_options():
    from methods.loop import fit
    from mmdata.shards.read import load

    assert set(PARAMS.get("train", {})) <= TRAIN_KEYS
    # seeds: how many times the train stage runs fit (seed, seed + 1, ...), not an option of one fit.
    # threads: the torch threads of the process that runs fit (pipelines.train.train_job), not an option of fit.
    # nproc: the processes (DDP ranks) the train stage runs in (pipelines.train.relaunch), not an option of fit.
    assert TRAIN_KEYS - {"batch_size", "num_workers", "seeds", "threads", "nproc"} <= keyword_options(fit)
    assert {"batch_size", "num_workers"} <= set(inspect.signature(load).parameters)


@pytest.mark.parametrize("corpus", sorted(PARAMS["experiments"]))
def test_experiment_runs_use_registered_methods_and_real_fields(corpus_features, corpus):
    assert corpus in CORPORA and corpus in PARAMS["corpora"]
    assert PIPELINE_SPLITS <= set(CORPORA[corpus].splits)
    runs = PARAMS["experiments"][corpus]
    # The report compares multimodal runs against runs on fewer modalities (the full suite has them).
    widest = max((set(run["fields"]) for run in runs.values()), key=len)
    assert len(widest) > 1 and any(set(run["fields"]) < widest for run in runs.values())
    for name, exp in runs.items():
        if exp.get("baseline"):  # ROBUSTAUC compares curves of the same fields
            assert set(runs[exp["baseline"]]["fields"]) == set(exp["fields"]), f"{corpus}.{name}"
        assert exp["method"] in METHODS
        assert exp["fields"] and set(exp["fields"]) <= set(corpus_features[corpus])
        assert set(exp.get("model", {})) <= keyword_options(METHODS[exp["method"]].build_model) - {"fields"}
        assert set(exp.get("train", {})) <= TRAIN_KEYS


# --- schemas, tasks and metrics ---


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_field_starts_with_a_modality(corpus_features, name):
    for field in corpus_features[name]:
        field_modality(field)  # raises on a malformed or modality-less name


def test_metrics_are_keyed_by_corpus_tasks():
    tasks = {corpus.task for corpus in CORPORA.values()}
    assert set(METRICS) <= tasks, f"metrics for tasks no corpus has: {sorted(set(METRICS) - tasks)}"
    assert tasks <= set(METRICS), f"corpus tasks without metrics: {sorted(tasks - set(METRICS))}"


# --- dvc.yaml ---


def _interpolate(value: str, key: str | None, item: Any) -> str:
    """``${key}`` and ``${item.a.b}`` of a foreach stage; anything else left over fails the test."""
    def sub(match: re.Match) -> str:
        expr = match.group(1)
        if expr == "key" and key is not None:
            return key
        if expr.startswith("item.") and item is not None:
            out = item
            for part in expr.split(".")[1:]:
                out = out[part]
            return str(out)
        raise AssertionError(f"unresolvable ${{{expr}}} in dvc.yaml entry {value!r}")

    return re.sub(r"\$\{([^}]+)\}", sub, value)


def _paths(entries: list) -> list[str]:
    """Paths of a deps/outs list whose entries are strings or ``{path: options}``."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _expand() -> list[dict[str, Any]]:
    """Every concrete stage: {stage, key, item, cmd, deps, outs, params}, foreach expanded over params.yaml."""
    concrete = []
    for stage, spec in DVC["stages"].items():
        if "foreach" in spec:
            match = re.fullmatch(r"\$\{(\w+)\}", spec["foreach"])
            assert match and match.group(1) in PARAMS, f"{stage}: foreach must name a params.yaml block"
            items, body = PARAMS[match.group(1)].items(), spec["do"]
        else:
            items, body = [(None, None)], spec
        for key, item in items:
            concrete.append({
                "stage": stage, "key": key, "item": item,
                "cmd": _interpolate(body["cmd"], key, item),
                **{part: [_interpolate(p, key, item) for p in _paths(body.get(part, []))]
                   for part in ("deps", "outs", "metrics")},
                "params": [_interpolate(p, key, item) for p in body.get("params", [])],
            })
    return concrete


CONCRETE = _expand()


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def test_dvc_has_the_pipeline_stages_running_their_entry_points():
    assert set(STAGES) <= set(DVC["stages"])
    for stage in CONCRETE:
        module = stage["cmd"].split()[2] if stage["cmd"].startswith("python -m ") else None
        assert module == f"pipelines.{stage['stage']}", stage["cmd"]
        assert f"pipelines/{stage['stage']}.py" in stage["deps"]
        if stage["key"] is not None:
            assert stage["cmd"].split()[3:] == [stage["key"]]


def test_dvc_foreach_items_are_the_params_blocks():
    assert {s["key"] for s in CONCRETE if s["stage"] in ("synth", "shard")} == set(CORPORA)
    assert {s["key"] for s in CONCRETE if s["stage"] in ("train", "evaluate")} == set(PARAMS["experiments"])
    assert set(PARAMS["experiments"]) == set(CORPORA)  # every corpus trains in the default `dvc repro`


def test_dvc_deps_exist_or_are_produced_by_another_stage():
    for stage in CONCRETE:
        produced = [(o, s["stage"]) for s in CONCRETE if s is not stage for o in s["outs"] + s["metrics"]]
        for dep in stage["deps"]:
            if (REPO / dep).exists() and not any(_inside(dep, o) for o, _ in produced):
                continue
            assert any(_inside(dep, o) or _inside(o, dep) for o, _ in produced), \
                f"{stage['stage']}@{stage['key']}: dep {dep} neither in the repo nor an output of another stage"


def test_dvc_params_name_existing_params_keys():
    for stage in CONCRETE:
        for dotted in stage["params"]:
            node = PARAMS
            for part in dotted.split("."):
                assert isinstance(node, dict) and part in node, f"{stage['stage']}: params {dotted} not in params.yaml"
                node = node[part]


# That the deps cover all the code a stage runs (imports followed transitively), and no more, is checked by
# tests/test_dvc_graph.py.
