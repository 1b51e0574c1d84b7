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
    missing = [name for name in tuples.modalities if name not in values]
    if missing:
        raise KeyError(f"gather: no values for modality {missing[0]!r}; given {sorted(values)}")
    # Per-call work is done once for all modalities (one compare, one transpose to contiguous per-modality
    # rows, one host-to-tensor wrap per device): at embedding sizes the Python/numpy overhead, not the copy, was
    # the cost.
    dropped = tuples.idx == DROPPED  # [n, k, M]
    any_dropped = dropped.any(axis=(0, 1)) if dropped.any() else np.zeros(len(tuples.modalities), bool)  # [M]
    safe = np.where(dropped, 0, tuples.idx) if any_dropped.any() else tuples.idx
    flat = np.ascontiguousarray(safe.transpose(2, 0, 1)).reshape(len(tuples.modalities), -1)  # [M, n * k]
    index: dict[torch.device, torch.Tensor] = {}
    out: dict[str, Any] = {}
    for m, name in enumerate(tuples.modalities):
        value, rows_dropped = values[name], dropped[:, :, m] if any_dropped[m] else None
        if isinstance(value, torch.Tensor):
            if value.device not in index:
                index[value.device] = torch.from_numpy(flat).to(value.device)
            out[name] = _take_tensor(value, index[value.device][m], tuples.idx.shape[:2], rows_dropped, placeholder)
        elif isinstance(value, np.ndarray):
            out[name] = _take_array(value, safe[:, :, m], rows_dropped, placeholder)
        else:
            out[name] = _take_list(value, tuples.idx[:, :, m], placeholder)
        if rows_dropped is not None:
            out[f"{name}_dropped"] = torch.from_numpy(np.ascontiguousarray(rows_dropped))
    return out


_NO_MASKED_FILL = (torch.uint16, torch.uint32, torch.uint64)


def _take_tensor(value: torch.Tensor, flat: torch.Tensor, shape: tuple[int, ...], dropped: np.ndarray | None,
                 placeholder: float) -> torch.Tensor:
    """``value[rows]`` as ``[n, k, ...]`` from the flat rows ``[n * k]``; dropped entries set to the placeholder."""
    # index_select on the flat rows: ~20x faster on CPU than advanced indexing with a 2-D index tensor.
    taken = value.index_select(0, flat).view(*shape, *value.shape[1:])
    if dropped is not None:
        # In place on the fresh copy (index_select's backward needs only the index): no full-size temporaries.
        mask = torch.from_numpy(dropped).to(value.device).view(*shape, *([1] * (value.dim() - 1)))
        if taken.dtype in _NO_MASKED_FILL:  # torch has no masked_fill kernel for them (uint16 depth maps)
            return torch.where(mask, torch.full_like(taken, placeholder), taken)
        taken = taken.masked_fill_(mask, placeholder)
    return taken


def _take_array(value: np.ndarray, safe: np.ndarray, dropped: np.ndarray | None, placeholder: float) -> np.ndarray:
    """``value[rows]`` for numpy ``value``: ``[n, k, ...]``, dropped entries set to the placeholder."""
    taken = np.take(value, safe, axis=0)
    if dropped is not None:
        taken[dropped] = placeholder  # np.take returns a copy, so the input stays untouched
    return taken


def _take_list(value: Sequence[Any], rows: np.ndarray, placeholder: Any) -> list[list[Any]]:
    """Nested lists ``[n][k]`` for list inputs; a numeric placeholder becomes "" for lists of strings."""
    strings = len(value) > 0 and isinstance(value[0], str)
    fill = "" if strings and not isinstance(placeholder, str) else placeholder
    return [[fill if r == DROPPED else value[r] for r in row] for row in rows.tolist()]
