"""Collating decoded samples into one torch batch dict, padding variable-length fields (with lengths and masks)."""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmdata.errors import ConfigError
from mmdata.types import Features, Sample

#: ``empty(shape, dtype) -> np.ndarray``: where collate puts a batch array (a worker passes its slot's arena).
Empty = Callable[[tuple[int, ...], np.dtype], np.ndarray]


def collate(samples: Sequence[Sample], features: Features, fields: Sequence[str], empty: Empty = np.empty
            ) -> dict[str, Any]:
    """Stack samples into a batch dict; ``empty`` allocates the stacked and padded arrays (default ``np.empty``; a
    worker allocates them in the shared-memory slot it sends, so the batch is not copied again).

    Returns:
        ``__key__``: list[str]; array fields: tensors ``[B, *shape]`` in the stored dtype; a field with a
        variable first axis: zero-padded ``[B, T_max, ...]`` plus ``<field>_lengths`` int64 ``[B]`` and
        ``<field>_mask`` bool ``[B, T_max]`` (True = real step); str fields: list[str].
    """
    batch: dict[str, Any] = {"__key__": [s["__key__"] for s in samples]}
    columns = getattr(samples, "columns", {})
    for name in fields:
        spec, values = features[name], [s[name] for s in samples]
        if spec.dtype == "str":
            batch[name] = values
        elif spec.variable_axes:
            batch.update(_pad(name, [np.asarray(v, dtype=spec.dtype) for v in values], empty))
        else:
            batch[name] = torch.from_numpy(_stacked(values, np.dtype(spec.dtype), columns.pop(name, None), empty))
    return batch


def _stacked(values: list[Any], dtype: np.dtype, column: tuple[np.ndarray, list] | None, empty: Empty
             ) -> np.ndarray:
    """``values`` stacked as ``dtype`` ``[B, *shape]``; the reader's batch array itself when ``values`` are its rows
    (:class:`mmdata.shards.direct.Rows`: popped, so a second collate of the same samples copies)."""
    if column is not None:
        array, rows = column
        if array.dtype == dtype and len(rows) == len(values) and all(map(operator.is_, values, rows)):
            return array
    if values and not np.ndim(values[0]):  # ints, floats, 0-d arrays: one conversion instead of B arrays
        return np.array(values, dtype=dtype).reshape(len(values))
    arrays = [np.asarray(v, dtype=dtype) for v in values]
    if not arrays:
        return np.stack(arrays)  # numpy's own error for an empty batch
    return np.stack(arrays, out=empty((len(arrays), *arrays[0].shape), dtype))


def _pad(name: str, arrays: list[np.ndarray], empty: Empty) -> dict[str, torch.Tensor]:
    trailing = sorted({a.shape[1:] for a in arrays})
    if len(trailing) > 1:
        raise ConfigError(f"field {name}: only the first axis may vary within a batch, got trailing shapes "
                         f"{trailing[:3]} (images of varying size: set the reader's image_size to resize them "
                         f"once at shard time, or read with batch_size=1)")
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    out = empty((len(arrays), int(lengths.max()), *arrays[0].shape[1:]), arrays[0].dtype)
    for i, array in enumerate(arrays):
        out[i, :len(array)] = array
        out[i, len(array):] = 0
    mask = np.arange(out.shape[1])[None, :] < lengths[:, None]
    return {name: torch.from_numpy(out), f"{name}_lengths": torch.from_numpy(lengths),
            f"{name}_mask": torch.from_numpy(mask)}
