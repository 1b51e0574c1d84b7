"""``index.parquet``: one row per sample, so samplers, few-shot subsets and random access never touch media.

Columns: ``key``, ``shard`` (file name), ``label`` (int64 class or float64 value), and per field
``offset_<field>`` / ``size_<field>`` (payload byte offset and size inside the shard), ``crc32_<field>``
(payload checksum, checked on every random read) and ``length_<field>`` for variable-length fields.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmdata.errors import ShardIntegrityError
from mmdata.types import Field


def write_index(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write index rows (dicts with identical keys) as a parquet file with fixed column order."""
    columns = list(rows[0])
    table = pa.table({name: [row[name] for row in rows] for name in columns})
    # No statistics/created_by differences between runs: the file is deterministic for the same rows.
    pq.write_table(table, path, compression="zstd", write_statistics=False)


def read_index(path: Path) -> dict[str, np.ndarray]:
    """Index columns as numpy arrays (``key``/``shard`` as object arrays of str).

    Raises:
        ShardIntegrityError: the index is missing or unreadable (the path is named).
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ShardIntegrityError(f"{path}: unreadable index ({exc})") from exc
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def index_label(stored: Any, field: Field, param: int | None = None) -> Any:
    """The ``label`` column value of an index row, derived from the sample's stored label.

    A class id (int) or a value (float) for scalar labels; the flattened float vector for a vector label
    (multi-hot genres: a list column samplers read as multi-label); NaN for a structured label (detection boxes
    ``[max_boxes, 8]``: no scalar or per-class form; the tar member holds it whole); under a View, the stored
    label's element at the row's ``pick`` / window ``start``. The writer builds the column with it and
    ``mmdata verify`` re-derives it from the tars, so the two cannot drift apart.

    Args:
        stored: the stored label (a sample's label value, or the decoded label member).
        field: the stored label's Field.
        param: the row's ``pick`` index or window ``start`` under a View, else None.

    Raises:
        IndexError: ``param`` outside the stored labels.
    """
    as_scalar = int if field.classes is not None else float
    if param is not None:
        if not 0 <= param < len(stored):
            raise IndexError(f"row parameter {param} outside the {len(stored)} stored labels")
        return as_scalar(np.asarray(stored)[param])
    if len(field.shape) >= 2:
        return float("nan")
    if field.shape:
        return np.asarray(stored, dtype=np.float64).ravel().tolist()
    return as_scalar(stored)
