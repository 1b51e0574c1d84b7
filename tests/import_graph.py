"""Shared by the static import-graph tests (test_layers, test_dvc_graph): the repo's modules by dotted name."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file for every ``.py`` under ``root/<package>`` (a package is its ``__init__``)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found
