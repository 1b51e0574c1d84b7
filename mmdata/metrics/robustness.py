"""Robustness: the augment kernels at a grid of levels as corruptions, and ROBUSTAUC.

Progressive Fusion (appendix C.1) measures robustness as the area between the performance-noise curves of a
model ``f`` and a baseline ``b``::

    ROBUSTAUC = tau = integral over sigma of ( Perf(f, sigma) - Perf(b, sigma) ) d sigma

where ``Perf(., sigma)`` is the metric on the evaluation set corrupted at noise level ``sigma``, evaluated on an
equally spaced grid of levels. ``Perf`` is a higher-is-better metric (accuracy); for an error such as MSE the
sign of the integral is flipped, so a larger ROBUSTAUC is always better (their Table 6 reports it flipped; the
baseline, a transformer there, scores 0 against itself). The paper's appendix defines no other robustness
figure (no relative or effective robustness), so none is provided here.

Corruption levels are augmenter strengths: ``corrupt(x, level)`` runs the Augmenter with ``strength=level``
and ``p=1``, so level 0 is the clean set and 1 the documented maxima of :mod:`mmdata.augment`. The draws are
keyed by sample only, not by level (common random numbers): every level scales the same noise field, so the
curve is monotone in the corruption rather than jittered by resampling.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmdata.augment import Augmenter
from mmdata.rng import make_rng
from mmdata.types import field_modality

#: Default corruption per modality: the noise-type kernels (level = their strength).
CORRUPTIONS: dict[str, tuple[str, ...]] = {
    "image": ("noise",), "video": ("noise",), "audio": ("noise",), "feat": ("noise",), "series": ("noise",),
    "points": ("jitter",), "text": ("dropout",),
}
#: An equally spaced grid of levels, as the paper evaluates on.
LEVELS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.0, 1.0, 11))


def corruption_policy(fields: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """:data:`CORRUPTIONS` for the given field names (fields of other modalities are left clean)."""
    return {name: CORRUPTIONS[field_modality(name)] for name in fields
            if not name.startswith("__") and field_modality(name) in CORRUPTIONS}


def corrupt(data: dict[str, Any], level: float, *, fields: Sequence[str] | None = None,
            policy: Mapping[str, Sequence[str]] | None = None, seed: int = 0) -> dict[str, Any]:
    """A sample or a collated batch corrupted at ``level`` with the augment kernels.

    Args:
        data: a sample dict (``__key__`` a str) or a batch dict (``__key__`` a list; tensors ``[B, ...]``).
        level: corruption level in [0, 1] (the augmenter strength).
        fields: fields to corrupt with :data:`CORRUPTIONS` (default: every field with a corruption); ignored
            when ``policy`` is given.
        policy: an explicit augmenter policy (field or modality -> ops) instead.
        seed: the corruption seed; draws come from ``make_rng(seed, "corrupt", key)`` for every level.

    Returns:
        A new dict; uncorrupted entries are the same objects.
    """
    keys = data["__key__"]
    names = [n for n in (fields if fields is not None else data) if _is_field(n)]
    augmenter = Augmenter(dict(policy) if policy is not None else corruption_policy(names), strength=float(level))
    if isinstance(keys, str):
        return augmenter(data, make_rng(seed, "corrupt", keys))
    from mmdata.augment.batched import augment_batch  # torch only for batches

    return augment_batch(augmenter, data, [make_rng(seed, "corrupt", key) for key in keys])


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
