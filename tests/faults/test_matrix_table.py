"""The fault-matrix table (tests/faults/README.md) cannot rot: every row ID exactly once, the groups' sizes of
reliability.md section 6, a known status, the summary line equal to the table, and every named test existing.

reliability.md lives outside the repository, so the table carries the IDs and expected outcomes itself and the
group sizes below are those of the document (116 rows).
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE = Path(__file__).with_name("README.md")
#: Rows per group in reliability.md section 6 (6.1 ... 6.15).
GROUPS = {"KEY": 10, "IMG": 10, "TXT": 6, "AUD": 8, "VID": 6, "DEP": 6, "PCD": 6, "FEA": 6, "CSV": 8,
          "SHW": 11, "SHR": 11, "SMP": 8, "AUG": 6, "TRN": 7, "DVC": 7}
STATUSES = ("automated", "partly", "not automated", "not applicable")
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def parse(text: str) -> list[dict[str, str]]:
    """The table's data rows as {id, expected, status, cell}; a row is a line starting ``| <ID> |``."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and re.fullmatch(r"[A-Z]{3}-\d{2}", cells[0]):
            assert len(cells) == 4, f"row {cells[0]} has {len(cells)} cells, want 4: {line}"
            rows.append(dict(zip(("id", "expected", "status", "cell"), cells)))
    return rows


@lru_cache(maxsize=None)
def defined_functions(path: str) -> frozenset[str]:
    """Module-level test functions defined in ``path`` (parsed, not imported)."""
    tree = ast.parse((REPO / path).read_text())
    return frozenset(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


ROWS = parse(TABLE.read_text())


def test_every_row_of_section_6_is_listed_once():
    ids = [r["id"] for r in ROWS]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    assert not repeated, f"IDs listed more than once: {repeated}"
    expected = {f"{group}-{k:02d}" for group, count in GROUPS.items() for k in range(1, count + 1)}
    assert set(ids) == expected, f"missing {sorted(expected - set(ids))}, unknown {sorted(set(ids) - expected)}"
    assert len(ids) == sum(GROUPS.values()) == 116


def test_rows_have_a_known_status_and_say_why():
    """Automated rows name a test; the others name one or give the reason in words."""
    for row in ROWS:
        assert row["status"] in STATUSES, f"{row['id']}: status {row['status']!r} not in {STATUSES}"
        assert row["expected"], f"{row['id']}: no expected outcome"
        if row["status"] == "automated":
            assert NODE.search(row["cell"]), f"{row['id']}: automated but names no test node"
        else:
            assert len(row["cell"]) > 10, f"{row['id']}: {row['status']} without a reason"


def test_summary_line_matches_the_table():
    counts = Counter(r["status"] for r in ROWS)
    want = (f"Summary: {counts['automated']} automated, {counts['partly']} partly, {counts['not automated']} not "
            f"automated, {counts['not applicable']} not applicable (of {len(ROWS)}).")
    assert want in TABLE.read_text(), f"update the summary line to: {want}"


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_named_tests_exist(row):
    """Each ``tests/x.py::name`` in the row is a file with a module-level function of that name."""
    for path, name in NODE.findall(row["cell"]):
        assert (REPO / path).is_file(), f"{row['id']}: {path} does not exist"
        assert name in defined_functions(path), f"{row['id']}: {path} has no function {name}"


def test_every_fault_test_is_in_the_table():
    """A test added under tests/faults/ without a row would be counted nowhere."""
    named = {(p, n) for row in ROWS for p, n in NODE.findall(row["cell"])}
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        rel = path.relative_to(REPO).as_posix()
        if path == Path(__file__):
            continue
        for name in sorted(defined_functions(rel)):
            if name.startswith("test_"):
                assert (rel, name) in named, f"{rel}::{name} is in no row of {TABLE.name}"


def test_the_parser_sees_a_broken_table():
    """The checks above are only as good as the parser: a dropped, a repeated and a malformed row are seen."""
    good = "| KEY-01 | e | automated | `tests/faults/test_matrix_table.py::test_the_parser_sees_a_broken_table` |"
    assert [r["id"] for r in parse(good + "\n" + good)] == ["KEY-01", "KEY-01"]
    assert parse("| ID | expected | status | tests / reason |\n|---|---|---|---|") == []
    with pytest.raises(AssertionError, match="cells"):
        parse("| KEY-01 | e | automated |")
