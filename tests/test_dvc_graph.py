"""The DVC graph is exact: every stage's deps cover all the repo code it runs, no more than it runs, its params
cover every params.yaml key, and dvc.lock holds only stages that exist.

Why: DVC re-runs a stage only when a declared dep or param changes. A module a stage imports but does not
declare makes ``dvc repro`` report "up to date" over stale outputs; a dep it does not import (or a params key no
stage reads) re-runs work, or suggests a knob that turns nothing.

The import graph is static (``ast``), transitive and conservative: it follows ``import`` statements anywhere in
a module (lazy imports inside functions included, ``if TYPE_CHECKING:`` blocks excluded: they never run), relative
imports, ``from pkg import submodule``, and the ``__init__`` of every parent package (importing ``a.b.c`` runs
``a/__init__.py`` and ``a/b/__init__.py``; so a registry ``__init__`` that imports every corpus makes all of them
deps of whoever imports one). Only the repo's own packages are followed (mmdata, methods, pipelines).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.import_graph import module_files

REPO = Path(__file__).resolve().parents[1]
CODE = ("mmdata", "methods", "pipelines")
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
LOCK = REPO / "dvc.lock"


# --- the import graph -------------------------------------------------------------------------------------

def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def direct_imports(module: str, modules: dict[str, Path]) -> set[str]:
    """Repo modules that running ``module`` may import directly, with their parent packages."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # ``from . import x`` / ``from ..a import b``: relative to this module's package
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            named.add(base)
            named |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    found = set()
    for name in named:  # importing a.b.c runs a/__init__.py, a/b/__init__.py and a/b/c.py
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules}
    return found


def import_closure(roots: Iterable[str], modules: dict[str, Path]) -> dict[str, str | None]:
    """Every repo module reachable from ``roots`` -> the module that first imported it (None for a root)."""
    parent: dict[str, str | None] = {}
    # ``python -m a.b`` imports package ``a`` first: a root's parent packages run too.
    todo = [(".".join(root.split(".")[:i]), None) for root in roots for i in range(1, root.count(".") + 2)
            if ".".join(root.split(".")[:i]) in modules]
    while todo:
        module, via = todo.pop(0)
        if module in parent:
            continue
        parent[module] = via
        todo += [(m, module) for m in sorted(direct_imports(module, modules)) if m not in parent]
    return parent


def chain(module: str, parent: dict[str, str | None]) -> str:
    """``pipelines.x -> ... -> module``: why a stage runs ``module`` (for failure messages)."""
    links = [module]
    while parent[links[-1]] is not None:
        links.append(parent[links[-1]])
    return " -> ".join(reversed(links))


def inert(path: Path) -> bool:
    """A module that only holds a docstring (and ``from __future__``): no change to it alters what runs."""
    body = ast.parse(path.read_text()).body
    return all((isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) or
               (isinstance(s, ast.ImportFrom) and s.module == "__future__") for s in body)


# --- dvc.yaml stages, foreach expanded --------------------------------------------------------------------

def _interpolate(value: str, key: str | None, item: Any) -> str:
    def sub(match: re.Match) -> str:
        expr = match.group(1)
        if expr == "key":
            return str(key)
        out = item
        for part in expr.split(".")[1:]:  # ${item.a.b}
            out = out[part]
        return str(out)

    return re.sub(r"\$\{([^}]+)\}", sub, value)


def concrete_stages() -> list[dict[str, Any]]:
    """Every stage DVC runs: {name (``stage@key`` as in dvc.lock), stage, key, item, module, deps, params}."""
    stages = []
    for stage, spec in DVC["stages"].items():
        if "foreach" in spec:
            items, body = PARAMS[re.fullmatch(r"\$\{(\w+)\}", spec["foreach"]).group(1)].items(), spec["do"]
        else:
            items, body = [(None, None)], spec
        for key, item in items:
            cmd = _interpolate(body["cmd"], key, item).split()
            assert cmd[:2] == ["python", "-m"], f"{stage}: cmd must be 'python -m <module> ...': {cmd}"
            stages.append({
                "name": stage if key is None else f"{stage}@{key}", "stage": stage, "key": key, "item": item,
                "module": cmd[2],
                "deps": [_interpolate(d if isinstance(d, str) else next(iter(d)), key, item)
                         for d in body.get("deps", [])],
                "params": [_interpolate(p, key, item) for p in body.get("params", [])],
            })
    return stages


STAGES = concrete_stages()
MODULES = module_files(REPO, CODE)


def _inside(path: str, dep: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def registry_entries(stage: dict[str, Any]) -> list[str]:
    """Modules a stage loads through a registry for its key: roots of the walk even if the registry becomes lazy."""
    key, item = stage["key"], stage["item"] or {}
    if stage["stage"] == "synth":
        return [f"mmdata.synth.{key}"]
    if stage["stage"] == "shard":
        return [f"mmdata.corpora.{key}"]
    if stage["stage"] == "fidelity":  # an item is a check's options, not a block of runs
        return []
    methods = sorted({f"methods.{run['method']}" for run in item.values()}) if key else []
    if stage["stage"] == "evaluate":
        return [f"mmdata.corpora.{key}", *methods]
    return methods


def stage_closure(stage: dict[str, Any]) -> dict[str, str | None]:
    roots = [stage["module"], *registry_entries(stage)]
    for root in roots:
        assert root in MODULES, f"{stage['name']}: runs {root}, which is not a module of the repo"
    return import_closure(roots, MODULES)


def code_deps(stage: dict[str, Any]) -> list[str]:
    """The stage's deps inside the repo's code packages (data deps are other stages' outputs)."""
    return [d for d in stage["deps"] if d.split("/")[0] in CODE]


@pytest.mark.parametrize("stage", STAGES, ids=[s["name"] for s in STAGES])
def test_deps_cover_every_module_the_stage_runs(stage):
    """Each module the stage may import (transitively) is a dep or lies under a dep folder."""
    closure = stage_closure(stage)
    missing = []
    for module, path in sorted((m, MODULES[m].relative_to(REPO).as_posix()) for m in closure):
        if not any(_inside(path, dep) for dep in stage["deps"]) and not inert(MODULES[module]):
            missing.append(f"{stage['name']}: runs {module} ({path}) but no dep covers it; "
                           f"imported via {chain(module, closure)}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("stage", STAGES, ids=[s["name"] for s in STAGES])
def test_code_deps_are_run_by_the_stage(stage):
    """No code dep the stage does not run: a file dep is imported; a folder dep has most of its modules imported
    (else list the files), and no dep sits inside another (a redundant line hides what really matters)."""
    closure = {MODULES[m].relative_to(REPO).as_posix() for m in stage_closure(stage)}
    problems = []
    deps = code_deps(stage)
    for dep in deps:
        if (REPO / dep).is_dir():
            files = [p.relative_to(REPO).as_posix() for p in (REPO / dep).rglob("*.py")]
            used = [f for f in files if f in closure]
            if 2 * len(used) <= len(files):
                problems.append(f"{stage['name']}: dep {dep} but runs only {len(used)} of its {len(files)} "
                                f"modules ({sorted(used)}); list those files instead")
        elif dep not in closure:
            problems.append(f"{stage['name']}: dep {dep} is never imported by {stage['module']}")
        outer = [d for d in deps if d != dep and _inside(dep, d)]
        if outer:
            problems.append(f"{stage['name']}: dep {dep} is already covered by {outer[0]}")
    assert not problems, "\n".join(problems)


def test_import_walk_follows_lazy_relative_and_package_imports(tmp_path):
    """The walker itself: a missed edge would let an undeclared module through, so each kind is exercised."""
    files = {
        "mmdata/__init__.py": "def load():\n    from mmdata.shards.read import load\n",
        "mmdata/shards/__init__.py": "",
        "mmdata/shards/read.py": "from . import codec\nfrom .tar import x\n",
        "mmdata/shards/codec.py": "",
        "mmdata/shards/tar.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mmdata.late\n",
        "mmdata/late.py": "",
        "mmdata/corpora/__init__.py": "from mmdata.corpora import a, b\n",
        "mmdata/corpora/a.py": "", "mmdata/corpora/b.py": "",
        "pipelines/__init__.py": '"""Docs only."""\n',
        "pipelines/x.py": "import mmdata.corpora.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = module_files(tmp_path, CODE)
    closure = import_closure(["pipelines.x"], modules)
    # corpora.b: the registry __init__ runs on importing corpora.a; shards.read: lazy import in mmdata.load;
    # codec/tar: relative imports; late: only under TYPE_CHECKING, so never run.
    assert set(closure) == {"pipelines", "pipelines.x", "mmdata", "mmdata.corpora", "mmdata.corpora.a",
                            "mmdata.corpora.b", "mmdata.shards", "mmdata.shards.read", "mmdata.shards.codec",
                            "mmdata.shards.tar"}
    assert chain("mmdata.shards.codec", closure).startswith("pipelines.x -> ")
    assert inert(modules["pipelines"]) and not inert(modules["mmdata"])


# --- dvc.lock ---------------------------------------------------------------------------------------------

def test_lock_has_no_entries_for_stages_that_no_longer_exist():
    """A dvc.lock entry for a removed stage (e.g. per-run ``train@avmnist_fused`` after train became per-corpus)
    is never re-run or cleaned by DVC, and ``dvc status`` hides it: it only misleads a reader."""
    if not LOCK.exists():
        pytest.skip("no dvc.lock yet")
    locked = set(yaml.safe_load(LOCK.read_text()).get("stages", {}))
    stale = sorted(locked - {s["name"] for s in STAGES})
    assert not stale, f"dvc.lock has entries for stages not in dvc.yaml: {stale}"


# --- params.yaml: every key is tracked by, and read by, a stage ----------------------------------------

def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    return [prefix]


def test_every_params_key_is_a_param_of_some_stage():
    """Each leaf key lies under some stage's ``params:`` entry, so changing it re-runs that stage."""
    tracked = [p for s in STAGES for p in s["params"]]
    untracked = [leaf for leaf in _leaves(PARAMS) if not any(_inside(leaf.replace(".", "/"), p.replace(".", "/"))
                                                             for p in tracked)]
    assert not untracked, f"params.yaml keys no stage lists under params: (they configure nothing): {untracked}"


def _string_constants(paths: Iterable[Path]) -> set[str]:
    return {n.value for p in paths for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("stage", [s for s in STAGES if s["key"] in (None, "avmnist")],
                         ids=lambda s: s["name"])
def test_stage_code_reads_the_params_it_lists(stage):
    """Each name in a stage's params entries (bar the foreach key) is a string its pipelines code subscripts:
    listing a block the code never reads would re-run the stage for nothing."""
    own = [MODULES[m] for m in stage_closure(stage) if m.startswith("pipelines")]
    strings = _string_constants(own)
    for entry in stage["params"]:
        for part in entry.split("."):
            if part != stage["key"]:
                assert part in strings, f"{stage['name']}: lists params {entry} but its code never reads {part!r}"


def test_corpus_blocks_are_consumed_by_the_code_they_mirror():
    """``corpora.<name>.synth/reader/shard`` keys are keyword options of the generator, reader and
    ``shard_corpus`` (the stages check and pass them as ``**block``); run ``model``/``train`` keys likewise."""
    from methods import METHODS
    from mmdata.corpora import CORPORA
    from mmdata.shards.build import shard_corpus
    from mmdata.synth import SYNTHS
    from pipelines.params import CORPUS_KEYS, EXPERIMENT_KEYS, TOP_LEVEL, keyword_options
    from pipelines.train import TRAIN_KEYS

    assert set(PARAMS) == TOP_LEVEL, "a top-level block the loader accepts but params.yaml lacks, or vice versa"
    for name, block in PARAMS["corpora"].items():
        assert set(block) == CORPUS_KEYS, name
        assert set(block["synth"]) <= keyword_options(SYNTHS[name]), name
        assert set(block["reader"]) <= CORPORA[name].options(), name
        assert set(block["shard"]) <= keyword_options(shard_corpus) - {"reader", "progress"}, name
    assert set(PARAMS["train"]) <= TRAIN_KEYS
    for corpus, runs in PARAMS["experiments"].items():
        for run, block in runs.items():
            assert set(block) <= EXPERIMENT_KEYS, f"{corpus}.{run}"
            method = METHODS[block["method"]]
            assert set(block.get("model", {})) <= keyword_options(method.build_model) - {"fields"}, f"{corpus}.{run}"
            assert set(block.get("train", {})) <= TRAIN_KEYS, f"{corpus}.{run}"
