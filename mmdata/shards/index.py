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
