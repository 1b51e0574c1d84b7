"""Controlled checks: each seed paper's controlled claim as an experiment on our own modules.

:data:`CHECKS` maps a check's name (== its DVC item == ``results/fidelity/<name>.json``) to a function
``check(*, seed_offset: int = 0, **options) -> dict`` of plain JSON values (str keys; floats, ints, bools, str,
lists, dicts). ``seed_offset`` salts every draw (data, weights, batch order), so a different offset repeats the
experiment on fresh randomness. Every result carries ``paper`` (``{"claim": what the paper or
../shared/methods.md claims, ...}``; :func:`run_check` enforces it),
``passed`` ({criterion: bool}, measured against the claim, never tuned to meet it) and ``measured`` (one line
of the headline figures). These are experiments, not unit tests: a check that falls short reports it.

One module per seed: :mod:`methods.fidelity.refnet` (methods.md 1.5), :mod:`methods.fidelity.profusion` (2.5),
:mod:`methods.fidelity.mdm` (3.3), :mod:`methods.fidelity.cmvqvae` (4.4), :mod:`methods.fidelity.tupleinfonce` (5.4).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from methods.fidelity.cmvqvae import cmvqvae_contradictory
from methods.fidelity.mdm import mdm_gaussians
from methods.fidelity.profusion import profusion_synthetic, profusion_zero_context
from methods.fidelity.refnet import refnet_adjacency, refnet_unimodal
from methods.fidelity.tupleinfonce import tuple_reinforce_sign, tuple_weak_modality
from mmdata.errors import ConfigError

CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    "refnet_adjacency": refnet_adjacency,  # methods.md 1.5 R1, R1b
    "refnet_unimodal": refnet_unimodal,  # 1.5 R2
    "profusion_synthetic": profusion_synthetic,  # 2.5 P1 (B.1)
    "profusion_zero_context": profusion_zero_context,  # 2.5 P2
    "mdm_gaussians": mdm_gaussians,  # 3.3 M1
    "cmvqvae_contradictory": cmvqvae_contradictory,  # 4.4 V3 + control
    "tuple_weak_modality": tuple_weak_modality,  # 5.4 T2
    "tuple_reinforce_sign": tuple_reinforce_sign,  # 5.4 T3
}


def check_options(name: str) -> dict[str, Any]:
    """The keyword options of check ``name`` with their defaults (``seed_offset`` included).

    Raises:
        ConfigError: an unknown check (a ValueError; the message lists the known ones).
    """
    if name not in CHECKS:
        raise ConfigError(f"unknown check {name!r}; known: {', '.join(sorted(CHECKS))}")
    params = inspect.signature(CHECKS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def run_check(name: str, *, seed_offset: int = 0, **options: Any) -> dict[str, Any]:
    """``CHECKS[name](seed_offset=seed_offset, **options)`` with the name and option names checked first.

    Raises:
        ConfigError: an unknown check or option (a ValueError; the message lists the valid ones).
    """
    known = check_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for check {name!r}; known: "
                         f"{', '.join(sorted(set(known) - {'seed_offset'})) or 'none'}")
    result = CHECKS[name](seed_offset=seed_offset, **options)
    if not isinstance(result.get("paper"), dict) or "claim" not in result["paper"] or \
            not {"measured", "passed"} <= set(result):
        raise ValueError(f"check {name!r} must return 'measured', 'passed' and 'paper': {{'claim': ...}}; "
                         f"got keys {sorted(result)}")
    return result


__all__ = ["CHECKS", "check_options", "run_check"]
