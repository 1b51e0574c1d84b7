"""Robustness: corruptions at a grid of levels (the augment kernels, modality drop), ROBUSTAUC and MultiBench's area.

Progressive Fusion (appendix C.1) measures robustness as the area between the performance-noise curves of a
model ``f`` and a baseline ``b``::

    ROBUSTAUC = tau = integral over sigma of ( Perf(f, sigma) - Perf(b, sigma) ) d sigma

where ``Perf(., sigma)`` is the metric on the evaluation set corrupted at noise level ``sigma``, evaluated on an
equally spaced grid of levels. ``Perf`` is a higher-is-better metric (accuracy); for an error such as MSE the
sign of the integral is flipped, so a larger ROBUSTAUC is always better (their Table 6 reports it flipped; the
baseline, a transformer there, scores 0 against itself).

MultiBench's "relative robustness" is a different number (:func:`multibench_robustness`): the trapezoid area
under the model's *own* curve with a fixed step of 0.1, no baseline, negated for error metrics (MultiBench
negates its finance tasks). MultiBench then max-min normalises it against hard-coded curves of other methods;
that step needs their numbers and is not reproduced: the raw area is returned.

Corruption levels are augmenter strengths: ``corrupt(x, level)`` runs the Augmenter with ``strength=level``
and ``p=1``, so level 0 is the clean set and 1 the documented maxima of :mod:`mmdata.augment`. The draws are
keyed by sample only, not by level (common random numbers): every level scales the same noise field, so the
curve is monotone in the corruption rather than jittered by resampling. :func:`drop` is the modality-drop
corruption: level = the probability that a sample loses the field, with the same common-random-number rule.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmdata.augment import Augmenter
from mmdata.rng import make_rng
from mmdata.types import field_modality, moves_as_cloud

#: Default corruption per modality: the noise-type kernels (level = their strength).
CORRUPTIONS: dict[str, tuple[str, ...]] = {
    "image": ("noise",), "video": ("noise",), "audio": ("noise",), "feat": ("noise",), "series": ("noise",),
    "points": ("jitter",), "text": ("dropout",),
}
#: An equally spaced grid of levels, as the paper evaluates on.
LEVELS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.0, 1.0, 11))


def corruption_policy(fields: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """:data:`CORRUPTIONS` for the given field names (fields of other modalities are left clean).

    The point kernels move the xyz of a ``[N, 3 + F]`` cloud, so among ``points`` fields only the cloud itself
    (named ``points``) is corrupted; per-point feature columns (``points_rgb``, ``points_height``) have no
    kernel corruption.
    """
    return {name: CORRUPTIONS[field_modality(name)] for name in fields
            if not name.startswith("__") and field_modality(name) in CORRUPTIONS
            and (field_modality(name) != "points" or moves_as_cloud(name))}


def corrupt(data: dict[str, Any], level: float, *, fields: Sequence[str] | None = None,
            policy: Mapping[str, Sequence[str]] | None = None, seed: int = 0) -> dict[str, Any]:
    """A sample or a collated batch corrupted at ``level`` with the augment kernels.

    Args:
        data: a sample dict (``__key__`` a str) or a batch dict (``__key__`` a list; tensors ``[B, ...]``).
        level: corruption level in [0, 1] (the augmenter strength).
        fields: fields to corrupt with :data:`CORRUPTIONS` (default: every field with a corruption; see
            :func:`corruption_policy`); every other field is left as it is. Ignored when ``policy`` is given.
        policy: an explicit augmenter policy (field or modality -> ops) instead.
        seed: the corruption seed; draws come from ``make_rng(seed, "corrupt", key)`` for every level.

    Returns:
        A new dict; uncorrupted entries are the same objects.
    """
    keys = data["__key__"]
    if policy is None:
        policy = corruption_policy([n for n in (fields if fields is not None else data) if _is_field(n)])
        # An Augmenter reads a policy key as a field *or* a modality ("points" is both): hand it only the chosen
        # fields, so no other field of the same modality is touched.
        view = {k: v for k, v in data.items() if k == "__key__" or k.removesuffix("_lengths").removesuffix("_mask")
                in policy}
    else:
        view = data
    augmenter = Augmenter(dict(policy), strength=float(level))
    if isinstance(keys, str):
        return {**data, **augmenter(view, make_rng(seed, "corrupt", keys))}
    from mmdata.augment.batched import augment_batch  # torch only for batches

    return {**data, **augment_batch(augmenter, view, [make_rng(seed, "corrupt", key) for key in keys])}


def drop(batch: dict[str, Any], level: float, *, fields: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """A collated batch with ``fields`` removed from about a ``level`` fraction of its samples (modality drop).

    Sample ``key`` loses the fields when ``u_key < level``, with ``u_key`` from :func:`drop_draws` (keyed by
    sample, not by level or batch): a sample dropped at 0.3 is dropped at 0.5 too, and its fate does not
    depend on the batch it sits in. The fraction is ``level`` in expectation; 0 drops none, 1 drops all.

    Args:
        batch: ``__key__`` list of B keys; tensors ``[B, ...]`` (any device); str fields as lists of B str;
            variable-length fields with ``<field>_lengths`` [B] and/or ``<field>_mask`` [B, T]. Not modified.
        level: drop probability per sample, in [0, 1].
        fields: the fields to drop; a dropped sample loses all of them.
        seed: the corruption seed.

    Returns:
        A new dict. Dropped rows: tensors all zero (padding included), ``<field>_lengths`` 0 and
        ``<field>_mask`` all False (an empty sequence: the encoders pool it to zeros), str "". Every other
        entry is the same object.

    Raises:
        ValueError: a single sample (not a batch), level outside [0, 1], or a field not in the batch.
    """
    keys = batch["__key__"]
    if isinstance(keys, str):
        raise ValueError("drop takes a collated batch (``__key__`` a list), got a single sample")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"drop level must be in [0, 1], got {level}")
    missing = [n for n in fields if n not in batch]
    if missing:
        raise ValueError(f"drop: fields {missing} not in the batch; it has {sorted(batch)}")
    dropped = drop_draws(keys, seed=seed) < level
    out = dict(batch)
    if not dropped.any():
        return out
    for name in fields:
        for entry in (name, f"{name}_lengths", f"{name}_mask"):
            if entry in batch:
                out[entry] = _zero_rows(batch[entry], dropped)
    return out


def drop_draws(keys: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """The uniform draws ``u`` [B] in [0, 1) that :func:`drop` compares with its level, one per sample key."""
    return np.array([make_rng(seed, "drop", key).random() for key in keys], dtype=np.float64)


def _zero_rows(value: Any, rows: np.ndarray) -> Any:
    """``value`` [B, ...] (tensor) or list of B str with the ``rows`` (bool [B]) zeroed / emptied."""
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"drop: list fields must hold str, got {sorted({type(v).__name__ for v in value})}")
        return ["" if r else v for v, r in zip(value, rows.tolist())]
    import torch  # only batches reach here; the per-sample paths of this module stay numpy-only

    keep = torch.as_tensor(~rows, device=value.device).reshape(-1, *([1] * (value.dim() - 1)))
    return torch.where(keep, value, torch.zeros((), dtype=value.dtype, device=value.device))


def _is_field(name: str) -> bool:
    try:
        field_modality(name)
    except ValueError:
        return False
    return not name.endswith(("_lengths", "_mask"))


def robust_auc(levels: Sequence[float], model_scores: Sequence[float], baseline_scores: Sequence[float], *,
               higher_is_better: bool = True, reduce: str = "integral") -> float:
    """ROBUSTAUC of Progressive Fusion: the area between the model's and the baseline's performance-noise curves.

    Args:
        levels: noise levels ``sigma``, strictly increasing (the paper uses an equally spaced grid).
        model_scores: ``Perf(f, sigma)`` at each level.
        baseline_scores: ``Perf(b, sigma)`` at each level.
        higher_is_better: False for error metrics (MSE, MAE): the integral's sign is flipped.
        reduce: "integral" (trapezoidal rule over ``levels``: the paper's formula) or "mean" (the plain average
            of the differences over the grid: the paper's description of how it is computed; on an equally
            spaced grid it is the Riemann sum divided by the grid's span).

    Returns:
        tau; positive when the model degrades more gracefully than the baseline.

    Raises:
        ValueError: mismatched lengths, fewer than two levels, levels not increasing, or non-finite values.
    """
    x, f, b = (np.asarray(v, dtype=np.float64) for v in (levels, model_scores, baseline_scores))
    if not (x.ndim == f.ndim == b.ndim == 1 and len(x) == len(f) == len(b)) or len(x) < 2:
        raise ValueError(f"need >= 2 levels and one score per level, got {x.shape}, {f.shape}, {b.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(f)) and np.all(np.isfinite(b))):
        raise ValueError("levels and scores must be finite")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"levels must be strictly increasing, got {x.tolist()}")
    diff = f - b
    if reduce == "integral":
        tau = float(np.sum((diff[1:] + diff[:-1]) * np.diff(x)) / 2.0)
    elif reduce == "mean":
        tau = float(diff.mean())
    else:
        raise ValueError(f"reduce must be 'integral' or 'mean', got {reduce!r}")
    return tau if higher_is_better else -tau


def multibench_robustness(scores: Sequence[float], *, step: float = 0.1, higher_is_better: bool = True) -> float:
    """MultiBench's raw relative robustness: the trapezoid area under the model's own performance-noise curve.

    ``sum_i (r_i + r_{i+1}) * step / 2`` over the scores ``r`` at equally spaced levels (MultiBench fixes
    ``step`` = 0.1 for its grid); a constant curve ``r`` of n points gives ``r * (n - 1) * step``. Unlike
    :func:`robust_auc` there is no baseline. MultiBench's later max-min normalisation against other methods'
    curves is not applied.

    Args:
        scores: the metric at each level, in level order, >= 2 values.
        step: spacing of the levels (0.1 on :data:`LEVELS`).
        higher_is_better: False for error metrics (MSE): the area is negated, as MultiBench negates its finance
            tasks, so a larger value is always better.

    Returns:
        The area (a float).

    Raises:
        ValueError: fewer than two scores, non-finite scores, or step <= 0.
    """
    r = np.asarray(scores, dtype=np.float64)
    if r.ndim != 1 or len(r) < 2 or not np.all(np.isfinite(r)):
        raise ValueError(f"need >= 2 finite scores in one row, got shape {r.shape}")
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    area = float(np.sum(r[1:] + r[:-1]) * step / 2.0)
    return area if higher_is_better else -area
