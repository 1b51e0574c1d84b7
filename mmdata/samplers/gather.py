"""Materialise negatives: gather each modality's values (raw inputs or embeddings) with a Tuples array.

Samplers never copy data; this is the one place where ``idx[b, j, m]`` becomes values. It works on whatever
the caller holds per modality: a batch's input tensors (then encode ``[n * k, ...]``), per-modality
embeddings ``[N, d]`` (cheap: fuse after gathering), numpy arrays, or lists (e.g. raw strings).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmdata.types import DROPPED, Tuples


def gather(values: Mapping[str, Any], tuples: Tuples, *, placeholder: float = 0.0) -> dict[str, Any]:
    """Gather every modality of ``tuples`` from ``values``.

    Args:
        values: field -> ``[N, ...]`` (torch tensor, numpy array, or list); N = items the tuples index (the
            batch for in-batch samplers). Fields not in ``tuples.modalities`` are ignored.
        tuples: ``[n, k, M]``; :data:`DROPPED` entries become the placeholder.
        placeholder: value of dropped entries (``""`` for lists of strings).

    Returns:
        field -> ``[n, k, ...]`` of the same kind as the input (tensors stay on their device), plus
        ``<field>_dropped`` bool ``[n, k]`` for fields that have a dropped entry.

    Raises:
        KeyError: a modality of the tuples is missing from ``values``.
    """
    out: dict[str, Any] = {}
    for m, name in enumerate(tuples.modalities):
        if name not in values:
            raise KeyError(f"gather: no values for modality {name!r}; given {sorted(values)}")
        rows = tuples.idx[:, :, m]
        dropped = rows == DROPPED
        out[name] = _take(values[name], rows, dropped, placeholder)
        if dropped.any():
            out[f"{name}_dropped"] = torch.from_numpy(dropped)
    return out


def _take(value: Any, rows: np.ndarray, dropped: np.ndarray, placeholder: float) -> Any:
    """``value[rows]`` for ``rows [n, k]`` with dropped entries replaced by the placeholder."""
    any_dropped = bool(dropped.any())
    safe = np.where(dropped, 0, rows) if any_dropped else rows
    if isinstance(value, torch.Tensor):
        # index_select on the flat rows: ~20x faster on CPU than advanced indexing with a 2-D index tensor.
        flat = torch.from_numpy(np.ascontiguousarray(safe).reshape(-1)).to(value.device)
        taken = value.index_select(0, flat).reshape(*rows.shape, *value.shape[1:])
        if any_dropped:
            keep = torch.from_numpy(~dropped).to(value.device).reshape(*dropped.shape, *([1] * (value.dim() - 1)))
            taken = torch.where(keep, taken, torch.full_like(taken, placeholder))
        return taken
    if isinstance(value, np.ndarray):
        taken = np.take(value, safe, axis=0)
        if any_dropped:
            taken[dropped] = placeholder  # np.take returns a copy, so the input stays untouched
        return taken
    return _take_list(value, rows, placeholder)


def _take_list(value: Sequence[Any], rows: np.ndarray, placeholder: Any) -> list[list[Any]]:
    """Nested lists ``[n][k]`` for list inputs; a numeric placeholder becomes "" for lists of strings."""
    strings = len(value) > 0 and isinstance(value[0], str)
    fill = "" if strings and not isinstance(placeholder, str) else placeholder
    return [[fill if r == DROPPED else value[r] for r in row] for row in rows.tolist()]
