"""The import graph keeps the layers of design.md section 2, and has no cycle.

Layers, low to high (an import goes down or sideways within its layer, never up)::

    0 ground      mmdata.types, mmdata.errors, mmdata.rng
    1 modalities  mmdata.modalities
    2 data        mmdata.corpora, mmdata.shards, mmdata.augment, mmdata.metrics, mmdata.synth
    3 samplers    mmdata.samplers
    4 methods     methods
    5 apps        pipelines, mmdata.cli, mmdata.preview, bench

The graph is static (``ast``) over mmdata/, methods/, pipelines/ and bench/. Every import statement counts,
wherever it sits: at module level, inside a function (a lazy import is still a dependency), under ``if
TYPE_CHECKING:`` (an annotation that names a higher layer couples to it all the same). ``from a import b``
counts as importing the submodule ``a.b`` when there is one, else ``a``; bench scripts import their siblings by
bare name (``from common import ...``).

The package root ``mmdata`` (mmdata/__init__.py) is the public façade, in no layer: at module level it may
import only the ground floor (so ``import mmdata``, which runs before any ``mmdata.x``, stays cheap and can
close no cycle), and inside functions anything (``mmdata.load`` forwards to the reader, and that import runs
only when a user calls it, after every module has loaded). Any module may import the root.

Cycles: an edge runs from a module to each module it names and to that module's parent packages (importing
``a.b.c`` runs ``a/b/__init__.py``, which may import more). A parent package the importer only reaches that way
is no edge when it is the importer's own (Python runs a package's ``__init__`` before its submodules, so a
registry ``__init__`` importing its members is no cycle); a module that names its own package outright (``import
mmdata.augment as registry`` in a module that package imports) is one. The root's lazy imports are no edges
(see above).
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.import_graph import module_files

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mmdata", "methods", "pipelines", "bench")
ROOT = "mmdata"  # the façade: in no layer

#: Module prefix -> layer; the longest matching prefix decides.
LAYERS: dict[str, int] = {
    "mmdata.types": 0, "mmdata.errors": 0, "mmdata.rng": 0,
    "mmdata.modalities": 1,
    "mmdata.corpora": 2, "mmdata.shards": 2, "mmdata.augment": 2, "mmdata.metrics": 2, "mmdata.synth": 2,
    "mmdata.samplers": 3,
    "methods": 4,
    "pipelines": 5, "mmdata.cli": 5, "mmdata.preview": 5, "bench": 5,
}
LAYER_NAMES = ("ground", "modalities", "data", "samplers", "methods", "apps")


@dataclass(frozen=True)
class Import:
    """One import statement's target: ``module`` imports ``target`` at ``line``; ``lazy`` inside a function."""

    module: str
    line: int
    target: str
    lazy: bool


MODULES = module_files(REPO, PACKAGES)


def layer(module: str) -> int | None:
    """The layer of a repo module (None for the root façade); a KeyError for a module no rule places."""
    if module == ROOT:
        return None
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    raise KeyError(module)


def _resolve(name: str) -> str | None:
    """The repo module an absolute dotted name refers to (its longest module prefix), or None if external."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def _walk(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it sits inside a function body (a lazy import)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, lazy = stack.pop()
        yield node, lazy
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute dotted names an import statement may load (``from a import b`` -> ``a.b`` and ``a``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative to this module's package
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            parts = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    if module.startswith("bench."):  # bench scripts run from bench/ and import their siblings bare
        names = [f"bench.{n}" if f"bench.{n.split('.')[0]}" in MODULES else n for n in names]
    return names


def imports(module: str) -> list[Import]:
    """Every repo module ``module`` imports, one entry per (statement, target)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = []
    for node, lazy in _walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.ImportFrom)
                                                                   and node.module == "__future__"):
            continue
        names = _names(module, node)
        if isinstance(node, ast.Import):
            targets = {_resolve(n) for n in names}
        else:  # ``from a import b``: the submodule a.b when it is one, else a
            *members, base = names
            submodules = {n for n in members if n in MODULES}
            targets = submodules | ({_resolve(base)} if len(submodules) < len(members) else set())
        found += [Import(module, node.lineno, t, lazy) for t in sorted(targets - {None, module})]
    return found


GRAPH = {module: imports(module) for module in MODULES}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts)) if ".".join(parts[:end]) in MODULES]


def edges(module: str) -> set[str]:
    """Modules whose code runs when ``module`` runs its imports (see the module docstring for what is left out)."""
    own = set(_parents(module))
    out = set()
    for imp in GRAPH[module]:
        if module == ROOT and imp.lazy:
            continue
        out |= {imp.target} | (set(_parents(imp.target)) - own)  # naming its own package outright still counts
    return out - {module}


def find_cycle() -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges(node)):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(MODULES):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _describe(imp: Import) -> str:
    low, high = layer(imp.target), layer(imp.module)
    where = "lazily " if imp.lazy else ""
    return (f"{MODULES[imp.module].relative_to(REPO)}:{imp.line}: {imp.module} ({LAYER_NAMES[high]}, layer {high}) "
            f"{where}imports {imp.target} ({LAYER_NAMES[low]}, layer {low}): an import must go down or sideways")


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if m != ROOT and not _placed(m))
    assert not unplaced, f"modules no LAYERS rule places (add the package to tests/test_layers.py): {unplaced}"


def _placed(module: str) -> bool:
    try:
        layer(module)
    except KeyError:
        return False
    return True


def upward_imports() -> list[str]:
    """One message per import that goes up a layer (the root façade is checked on its own)."""
    return [_describe(imp) for module in sorted(MODULES) if module != ROOT for imp in GRAPH[module]
            if layer(imp.target) is not None and layer(imp.target) > layer(module)]


def test_imports_go_down_or_sideways():
    upward = upward_imports()
    assert not upward, "\n".join(upward)


def test_the_root_facade_imports_only_the_ground_floor_at_module_level():
    eager = [f"mmdata/__init__.py:{imp.line}: imports {imp.target} at module level (layer {layer(imp.target)}); "
             f"import it inside the function that needs it" for imp in GRAPH[ROOT]
             if not imp.lazy and layer(imp.target) != 0]
    assert not eager, "\n".join(eager)


def test_no_import_cycle():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _error_classes() -> set[str]:
    import mmdata.errors as errors

    return {name for name, value in vars(errors).items() if isinstance(value, type)
            and issubclass(value, BaseException) and value.__module__ == errors.__name__}


def test_every_error_class_is_defined_in_mmdata_errors_and_exported_from_mmdata():
    import mmdata

    elsewhere = [f"{path.relative_to(REPO)}:{node.lineno}: class {node.name}" for path in MODULES.values()
                 if path != MODULES["mmdata.errors"] for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ClassDef) and any(_names_an_error(base) for base in node.bases)]
    assert not elsewhere, "define these in mmdata/errors.py:\n" + "\n".join(elsewhere)
    assert _error_classes() <= set(mmdata.__all__), sorted(_error_classes() - set(mmdata.__all__))


def _names_an_error(base: ast.expr) -> bool:
    """A base class named like an exception (``FooError``, ``Exception``, ``KeyboardInterrupt``, ...)."""
    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
    return name.endswith(("Error", "Exception", "Interrupt", "Interrupted", "Warning", "Exit"))


def test_error_classes_are_imported_from_mmdata_errors():
    """One name per concept: an error class is imported from mmdata.errors (or the root), never via another
    module that happens to import it."""
    classes = _error_classes()
    wrong = []
    for path in [*MODULES.values(), *sorted((REPO / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module not in ("mmdata.errors", ROOT) and node.level == 0:
                names = sorted(classes & {alias.name for alias in node.names})
                wrong += [f"{path.relative_to(REPO)}:{node.lineno}: {n} from {node.module}" for n in names]
    assert not wrong, "import these from mmdata.errors:\n" + "\n".join(wrong)


# --- the checker itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module, expected", [("mmdata.types", 0), ("mmdata.corpora.affect.reader", 2),
                                              ("mmdata.modalities.depth", 1), ("mmdata.cli", 5), ("bench.common", 5),
                                              ("methods.loop", 4), ("mmdata", None)])
def test_layer_of(module, expected):
    assert layer(module) == expected


def test_the_graph_sees_lazy_relative_and_bench_imports():
    targets = {(imp.target, imp.lazy) for imp in GRAPH[ROOT]}
    assert ("mmdata.errors", False) in targets and ("mmdata.shards.read", True) in targets
    assert "bench.common" in {imp.target for imp in GRAPH["bench.augment"]}
    assert "mmdata.shards.members" in {imp.target for imp in GRAPH["mmdata.shards.read"]}


def _with_imports(monkeypatch: pytest.MonkeyPatch, *imports: Import) -> None:
    """Replace the real graph by one holding only ``imports``."""
    graph = {module: [] for module in MODULES}
    for imp in imports:
        graph[imp.module].append(imp)
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", graph)


def test_an_upward_import_is_named_with_both_layers(monkeypatch):
    _with_imports(monkeypatch, Import("mmdata.modalities.image", 7, "mmdata.corpora.check", True))
    assert upward_imports() == ["mmdata/modalities/image.py:7: mmdata.modalities.image (modalities, layer 1) "
                                "lazily imports mmdata.corpora.check (data, layer 2): "
                                "an import must go down or sideways"]


def test_a_cycle_is_reported_and_a_registry_init_is_not_one(monkeypatch):
    _with_imports(monkeypatch, Import("mmdata.augment", 1, "mmdata.augment.augmenter", False),
                  Import("mmdata.augment.augmenter", 2, "mmdata.augment.base", False))
    assert find_cycle() is None  # augmenter runs its package's __init__ implicitly: that is no edge
    _with_imports(monkeypatch, Import("mmdata.augment", 1, "mmdata.augment.augmenter", False),
                  Import("mmdata.augment.augmenter", 2, "mmdata.augment", False))
    assert find_cycle() == ["mmdata.augment", "mmdata.augment.augmenter", "mmdata.augment"]
