"""Robustness of a trained run: its metric against corruption level, per input field, and the two areas.

For each input field of a run and each corruption, the field alone is corrupted at every level of a grid and
the test split re-scored, giving one curve per (field, corruption):

- ``noise``: the field's modality kernel of :data:`mmdata.metrics.robustness.CORRUPTIONS` at strength = level
  (Gaussian noise for images, audio, features and series, word dropout for text, jitter for points); fields
  of a modality without one (depth, normals) get no noise curve;
- ``drop``: :func:`mmdata.metrics.robustness.drop`, the field removed from a ``level`` share of the samples.

:func:`robustness_summary` turns the curves into flat metrics-JSON keys: MultiBench's raw area
``multibench_robustness_<field>_<corruption>`` for every curve, and ProFusion's ROBUSTAUC
``robust_auc_<field>_<corruption>`` against a baseline run's curves where that run has the same field.

Cost: the split is decoded once and kept in memory; the clean pass runs once; each noise level is one pass;
the whole drop curve costs one pass (see :func:`_drop_curve`). So a run with F fields costs
``1 + F * len(levels)`` passes over its test split. Measured on the minis (one thread, eval batches of 256, one
seed of every run of the ten corpora's fused/unimodal experiments): about 61 CPU-s on the 11-level grid, 28 on
(0, .25, .5, .75, 1), 18 on (0, .5, 1); SNLI-VE, AV-MNIST and SUN RGB-D cost the most.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch

from methods.loop import evaluate
from mmdata.metrics.robustness import LEVELS, corrupt, corruption_policy, drop, drop_draws, multibench_robustness
from mmdata.metrics.robustness import robust_auc

#: ``metric(pred, truth) -> float``: one number per scored split (the corpus task's headline metric).
Metric = Callable[[np.ndarray, np.ndarray], float]
#: Curves of one run: field -> corruption ("noise", "drop") -> score per level.
Curves = dict[str, dict[str, list[float]]]


def robustness_curves(method: ModuleType, model: torch.nn.Module, batches: Iterable[dict[str, Any]], *,
                      fields: Sequence[str], metric: Metric, levels: Sequence[float] = LEVELS,
                      seed: int = 0) -> Curves:
    """Score a model on its test batches with each of ``fields`` corrupted alone at each level.

    Args:
        method: the run's method module (its ``predict`` is called in eval mode under ``torch.no_grad``).
        model: the trained model.
        batches: the test batch dicts (a loader or a list); iterated once and kept in memory.
        fields: the run's input fields to corrupt, one at a time (the others stay clean).
        metric: ``metric(pred [N] or [N, C], truth [N] or [N, C]) -> float``.
        levels: strictly increasing corruption levels in [0, 1]; level 0 is the clean split.
        seed: corruption seed (draws keyed by sample: the same samples and noise at every level).

    Returns:
        ``{field: {"noise": [score per level], "drop": [score per level]}}`` (no "noise" for a field whose
        modality has no corruption kernel).

    Raises:
        ValueError: bad levels, no batches, or a field not in the batches.
    """
    levels = _check_levels(levels)
    decoded = list(batches)
    if not decoded:
        raise ValueError("robustness_curves: the batches yielded no samples")
    missing = [n for n in fields if n not in decoded[0]]
    if missing:
        raise ValueError(f"robustness_curves: fields {missing} not in the batches; they have {sorted(decoded[0])}")
    clean, truth, keys = _predict(method, model, decoded)
    curves: Curves = {}
    for field in fields:
        curves[field] = {}
        if corruption_policy([field]):
            curves[field]["noise"] = [metric(clean, truth) if level == 0 else
                                      metric(_predict(method, model, _noisy(decoded, field, level, seed))[0], truth)
                                      for level in levels]
        curves[field]["drop"] = _drop_curve(method, model, decoded, field, levels, metric, seed, clean, truth, keys)
    return curves


def _drop_curve(method: ModuleType, model: torch.nn.Module, decoded: list[dict[str, Any]], field: str,
                levels: tuple[float, ...], metric: Metric, seed: int, clean: np.ndarray, truth: np.ndarray,
                keys: list[str]) -> list[float]:
    """The drop curve from one pass with the field dropped everywhere.

    With draws keyed by sample, a sample's input is either clean or dropped (the same zeros at every level), so
    the predictions at ``level`` are the clean ones where ``u_key >= level`` and the all-dropped ones elsewhere.
    This holds for any model whose eval-mode prediction of a sample does not depend on the rest of its batch
    (true of every method here: BatchNorm uses running statistics in eval mode); tests check it against
    dropping and predicting level by level.
    """
    dropped = _predict(method, model, (drop(b, 1.0, fields=[field], seed=seed) for b in decoded))[0]
    u = drop_draws(keys, seed=seed).reshape(-1, *([1] * (clean.ndim - 1)))
    return [metric(np.where(u < level, dropped, clean), truth) for level in levels]


def _noisy(decoded: list[dict[str, Any]], field: str, level: float, seed: int) -> Iterable[dict[str, Any]]:
    """The batches with ``field`` corrupted at ``level``, one at a time (only one corrupted copy in memory)."""
    return (corrupt(batch, level, fields=[field], seed=seed) for batch in decoded)


def _predict(method: ModuleType, model: torch.nn.Module,
             batches: Iterable[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(pred, truth, keys)`` of :func:`methods.loop.evaluate` (eval mode) without building autograd graphs."""
    with torch.no_grad():
        return evaluate(method, model, batches)


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(x) for x in levels)
    if len(out) < 2 or any(b <= a for a, b in zip(out, out[1:])) or out[0] < 0 or out[-1] > 1:
        raise ValueError(f"levels must be >= 2 strictly increasing values in [0, 1], got {list(levels)}")
    return out


def robustness_summary(curves: Mapping[str, Mapping[str, Sequence[float]]], levels: Sequence[float],
                       higher_is_better: bool, baseline_curves: Mapping[str, Mapping[str, Sequence[float]]]
                       | None = None) -> dict[str, float]:
    """Flat metrics-JSON entries for one run's curves.

    Args:
        curves: from :func:`robustness_curves` (``{field: {corruption: [score per level]}}``).
        levels: the levels the curves were scored at; equally spaced (MultiBench's trapezoid assumes it).
        higher_is_better: False for an error metric (MSE): both numbers are negated, so larger is better.
        baseline_curves: the named baseline run's curves, or None for no ROBUSTAUC. A (field, corruption) the
            baseline run lacks (a field it does not read) gets no ``robust_auc_`` key.

    Returns:
        ``multibench_robustness_<field>_<corruption>``: :func:`~mmdata.metrics.robustness.multibench_robustness`
        with step = the grid spacing (0.1 on the default grid, MultiBench's fixed step), for every curve;
        ``robust_auc_<field>_<corruption>``: :func:`~mmdata.metrics.robustness.robust_auc` (trapezoid over the
        levels) of the run against the baseline, where the baseline has that curve. 0 for a run against itself.

    Raises:
        ValueError: levels not equally spaced, or a curve with a score count other than the level count.
    """
    grid = _check_levels(levels)
    steps = np.diff(grid)
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9):
        raise ValueError(f"levels must be equally spaced for MultiBench's trapezoid, got {list(levels)}")
    out: dict[str, float] = {}
    for field, by_corruption in curves.items():
        for corruption, scores in by_corruption.items():
            if len(scores) != len(grid):
                raise ValueError(f"curve {field}/{corruption} has {len(scores)} scores for {len(grid)} levels")
            out[f"multibench_robustness_{field}_{corruption}"] = multibench_robustness(
                scores, step=float(steps[0]), higher_is_better=higher_is_better)
            base = (baseline_curves or {}).get(field, {}).get(corruption)
            if base is not None:
                out[f"robust_auc_{field}_{corruption}"] = robust_auc(grid, scores, base,
                                                                     higher_is_better=higher_is_better)
    return out
