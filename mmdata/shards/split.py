"""Opening a split: ``SplitShards.open`` checks the shards against the manifest and index (see
:mod:`mmdata.shards.read` for the integrity guarantees); ``resolve_split_dir`` finds a split by corpus name.
A remote split (:mod:`mmdata.shards.remote`) goes through the same reconciliation, ``SplitShards.checked``."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import ShardIntegrityError
from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX, manifest_features, read_manifest, sha256_file
from mmdata.types import Features, View

DEFAULT_SHARDS_ROOT = Path("data/shards")


def resolve_split_dir(source: str | Path, split: str, shards_root: str | Path = DEFAULT_SHARDS_ROOT) -> Path:
    """The split directory for a corpus name, a corpus shard directory or a split directory."""
    path = Path(source)
    for candidate in (path, path / split, Path(shards_root) / str(source) / split):
        if (candidate / "manifest.json").exists():
            return candidate
    raise ShardIntegrityError(
        f"no completed shards for {source!r} split {split!r} (looked in {path}, {path / split} and "
        f"{Path(shards_root) / str(source) / split}); run `mmdata shard` or `dvc repro` first")


@dataclass
class SplitShards:
    """A split on disk, checked against its manifest: schema, shard records and the index columns."""

    directory: Path | str  # a str: the URL of a remote split
    manifest: dict[str, Any]
    stored: Features  # the schema of the tar members
    index: dict[str, np.ndarray]
    shard_rows: list[np.ndarray]  # index rows of each shard, in manifest order
    view: View | None = None
    remote: Any = None  # a remote split's fetch settings (mmdata.shards.remote.RemoteSplit), else None

    @property
    def label(self) -> str:
        """The label field's name."""
        return self.manifest["label_field"]

    @property
    def features(self) -> Features:
        """The schema of the samples a reader gets (the stored schema, or the viewed one under a View)."""
        return self.view.features(self.stored, self.label) if self.view else self.stored

    @classmethod
    def open(cls, directory: str | Path, verify: bool = False) -> SplitShards:
        """Open and check a split directory (see the module docstring for what is checked)."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        index = read_index(directory / INDEX)
        return cls.checked(directory, manifest, index,
                           lambda record, rows: _check_shard(directory / record["name"], record, rows, verify))

    @classmethod
    def checked(cls, directory: Path | str, manifest: dict[str, Any], index: dict[str, np.ndarray],
                check_shard: Callable[[dict[str, Any], int], None], remote: Any = None) -> SplitShards:
        """A split from its manifest and index, the index's rows reconciled with the manifest's shards and
        ``check_shard(record, index rows of the shard)`` called for every shard record (it raises).

        Args:
            directory: the split directory, or the split's URL for a remote split.
            remote: a remote split's fetch settings (:class:`mmdata.shards.remote.RemoteSplit`), else None.
        """
        names = [s["name"] for s in manifest["shards"]]
        position = {name: i for i, name in enumerate(names)}
        shard_of_row = np.array([position.get(s, -1) for s in index["shard"]], dtype=np.int64)
        if (shard_of_row < 0).any() or len(shard_of_row) != manifest["rows"]:
            where = f"{directory}/{INDEX}" if isinstance(directory, str) else directory / INDEX
            raise ShardIntegrityError(f"{where}: {len(shard_of_row)} rows for {manifest['rows']} "
                                      f"rows in the manifest, or rows naming unlisted shards")
        shard_rows = [np.flatnonzero(shard_of_row == i) for i in range(len(names))]
        for record, rows in zip(manifest["shards"], shard_rows):
            check_shard(record, len(rows))
        view = manifest.get("view")
        view = View(view["kind"], tuple(view["fields"]), view["length"]) if view else None
        return cls(directory, manifest, manifest_features(manifest), index, shard_rows, view, remote)


def check_record(where: str | Path, record: dict[str, Any], rows: int, size: int | None, held: str = "") -> None:
    """A present shard against its manifest record: its byte size (None: not known, e.g. a listing without
    sizes) and the index rows naming it; ``held`` says where the size was seen (" on the remote").

    Raises:
        ShardIntegrityError: a size or row count other than the record's (named by ``where``).
    """
    if size is not None and size != record["bytes"]:
        raise ShardIntegrityError(f"{where}: {size} bytes{held}, manifest says {record['bytes']} "
                                  f"(truncated or altered)")
    if rows != record["rows"]:
        raise ShardIntegrityError(f"{where}: index has {rows} rows, manifest says {record['rows']}")


def _check_shard(path: Path, record: dict[str, Any], rows: int, verify: bool) -> None:
    if not path.exists():
        raise ShardIntegrityError(f"{path}: shard listed in the manifest is missing")
    check_record(path, record, rows, path.stat().st_size)
    if verify and (digest := sha256_file(path)) != record["sha256"]:
        raise ShardIntegrityError(f"{path}: sha256 {digest[:16]}..., the manifest says {record['sha256'][:16]}... "
                                  f"(corrupted, or replaced by another run's shard)")
