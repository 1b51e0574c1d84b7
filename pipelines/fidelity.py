"""Stage ``fidelity@<check>``: run one controlled check of :data:`methods.fidelity.CHECKS` and write
``results/fidelity/<check>.json`` (the report reads them: :func:`pipelines.report.fidelity_table`).

    python -m pipelines.fidelity <check> [--seed-offset N] [--option key=value ...] [--threads N]

The check's options come from ``fidelity.<check>`` of params.yaml (the DVC stage's params; its keys are the
check's keyword options, ``seed_offset`` included), overridden by ``--option`` and ``--seed-offset``.
The file holds the check's result (sorted keys, indent 1, floats rounded to :data:`DIGITS` significant digits,
so a rerun with the same seed offset writes the same bytes) plus ``check``, ``seed_offset`` and ``options``.
The wall-clock time is printed, not stored (it differs on every run).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from methods.fidelity import CHECKS, run_check
from mmdata.errors import ConfigError, run_guarded
from mmdata.shards.manifest import write_json_atomic
from pipelines.params import PARAMS, load_params

RESULTS = Path("results/fidelity")
#: Significant digits kept in the JSON: far above any claim's precision, far below float32 training noise.
DIGITS = 6


def plain(value: Any, digits: int = DIGITS) -> Any:
    """``value`` as JSON-ready plain values: floats rounded to ``digits`` significant digits (non-finite ->
    None), tuples -> lists, dict keys -> str, numpy / torch scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, digits) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()  # a numpy scalar or one-element tensor (anything larger raises here)
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    raise TypeError(f"not a plain JSON value: {type(value).__name__}")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: YAML-parsed value} (``trials=3`` -> 3, ``grid=full`` -> "full").

    Raises:
        ConfigError: an entry without ``=``.
    """
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def params_options(check: str, path: str | Path = PARAMS) -> dict[str, Any]:
    """The options block ``fidelity.<check>`` of params.yaml ({} when the file, the section or the block is
    absent: the check's defaults).

    Raises:
        ConfigError: a block that is not a mapping (or a params.yaml that fails its checks).
    """
    if not Path(path).exists():
        return {}
    block = (load_params(Path(path)).get("fidelity") or {}).get(check) or {}
    if not isinstance(block, dict):
        raise ConfigError(f"fidelity.{check} in {path} must map option names to values, got {block!r}")
    return dict(block)


def result_path(check: str, results_dir: str | Path = RESULTS) -> Path:
    """Where check ``check`` writes its result."""
    return Path(results_dir) / f"{check}.json"


def run(check: str, *, seed_offset: int = 0, options: dict[str, Any] | None = None,
        results_dir: str | Path = RESULTS) -> tuple[dict[str, Any], float]:
    """Run a check, write its JSON atomically, and return (the written result, seconds taken)."""
    start = time.perf_counter()
    result = run_check(check, seed_offset=seed_offset, **(options or {}))
    seconds = time.perf_counter() - start
    result = plain({**result, "check": check, "seed_offset": seed_offset, "options": options or {}})
    path = result_path(check, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    return result, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("check", help=f"one of: {', '.join(CHECKS)}")
    parser.add_argument("--seed-offset", type=int, default=None,
                        help="salt of every draw (fresh data and weights; default: params.yaml's, else 0)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a check option")
    # One thread: the checks run many tiny ops, and a second intra-op thread on a loaded 2-core machine made
    # them 10x slower (measured: 25 ms vs 240 ms per stacked ProFusion step).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--results", default=str(RESULTS), help="output folder (default results/fidelity)")
    parser.add_argument("--params", default=str(PARAMS), help="params file with the fidelity.<check> options")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = {**params_options(args.check, args.params), **parse_options(args.option)}
    seed_offset = options.pop("seed_offset", 0) if args.seed_offset is None else args.seed_offset
    options.pop("seed_offset", None)
    result, seconds = run(args.check, seed_offset=seed_offset, options=options, results_dir=args.results)
    failed = [name for name, ok in result["passed"].items() if not ok]
    print(f"fidelity {args.check}: {result['measured']} ({seconds:.1f} s)")
    print(f"fidelity {args.check}: paper: {result['paper']['claim']}")
    print(f"fidelity {args.check}: passed {len(result['passed']) - len(failed)}/{len(result['passed'])}"
          + (f"; short of the claim: {', '.join(failed)}" if failed else ""))
    print(f"fidelity {args.check}: wrote {result_path(args.check, args.results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_guarded("pipelines.fidelity", main))
