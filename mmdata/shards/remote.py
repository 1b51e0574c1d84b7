"""Shards read from object storage: ``mmdata.load("s3://bucket/prefix/<corpus>", split)`` through fsspec.

Any URL fsspec resolves works the same way (``s3://`` needs s3fs: ``pip install 'mmdata[s3]'``; ``gs://``,
``az://`` their own fsspec package; ``file://`` and ``memory://`` need nothing). Opening reads
``manifest.json`` and ``index.parquet`` from the remote and lists the split once: every shard must be there
with the manifest's byte size and the index must hold the manifest's count per shard, as
:meth:`SplitShards.open` checks locally, so a truncated or missing object fails before the epoch starts.

Where the fetch happens: on demand, per whole shard, in the process that reads it (the main process, or each
loader worker), as mosaicml/streaming does. Prefetching a rank's shards at open would need the rank's whole
share in the cache before the first batch and cannot stream a share larger than the cache; on demand, the
first epoch overlaps downloads with decoding across workers, the cache bound holds for any share size, and a
warm cache costs an ``open``, ``flock`` and ``fstat`` per shard per batch. A batch's shards are held
(share-locked, so no process evicts them) only while it is read, so the bound must hold the shards the batches
in progress read at once: up to ``readers x batch_size`` shards under shuffling (readers: loader workers, or
the main process, times processes sharing the cache). A smaller bound still works while the readers' needs do
not collide, but may wait and fail after :data:`mmdata.shards.cache.ROOM_WAIT_S` naming the bound. See
:mod:`mmdata.shards.cache` for the cache's layout, bound, LRU eviction and verification.

Every fetched shard is checked against the manifest (byte size and sha256) before it is renamed into the
cache; members are then read from the cached file by the same checked reader as local shards (tar header and
crc32 of every member). A short read (a truncated transfer, a dropped connection, an error of the transport)
is retried from the byte reached, :data:`RETRIES` times in a row with doubling pauses from :data:`BACKOFF_S`;
then the read fails with a :class:`ShardIntegrityError` naming the URL, the shard and what went wrong, never a
smaller epoch.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.shards.cache import ShardCache, cache_settings
from mmdata.shards.collate import Empty
from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX, MANIFEST, read_manifest
from mmdata.shards.members import MemberReader
from mmdata.shards.split import SplitShards, check_record, resolve_split_dir

#: Consecutive failed attempts (without a byte of progress) before a read gives up.
RETRIES = 4
#: The pause after the first failure; it doubles with each further one.
BACKOFF_S = 0.1
#: Errors a retry cannot mend (a wrong storage option, a missing package): raised at once.
NOT_TRANSIENT = (TypeError, AttributeError, ImportError, NotImplementedError)
#: Bytes per ranged GET of a shard.
CHUNK = 8 << 20


def is_url(source: object) -> bool:
    """Whether ``source`` names a remote (fsspec) location, e.g. ``s3://bucket/prefix``."""
    return isinstance(source, str) and "://" in source


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it.

    Raises:
        ConfigError: fsspec, or the package of the URL's protocol (s3fs for ``s3://``), is not installed.
    """
    try:
        import fsspec
    except ImportError as exc:
        raise ConfigError(f"{url}: reading remote shards needs fsspec: pip install 'mmdata[s3]'") from exc
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        raise ConfigError(f"{url}: {exc} (for s3:// URLs: pip install 'mmdata[s3]')") from exc


@dataclass(frozen=True)
class RemoteSplit:
    """What a reader process needs to fetch a remote split's shards (plain data: workers receive it).

    Attributes:
        url: the split's URL (``.../<corpus>/<split>``, no trailing slash).
        records: the manifest's shard records by shard name (``bytes``, ``sha256``, ``rows``, ...).
        cache_dir, cache_bytes: the local cache and its bound (see :func:`cache_settings`).
        storage_options: keyword arguments for the fsspec filesystem (credentials, endpoint, ...).
    """

    url: str
    records: dict[str, dict[str, Any]]
    cache_dir: str
    cache_bytes: int
    storage_options: dict[str, Any] = field(default_factory=dict)


def _retrying(attempt: Callable[[], Any], where: str) -> Any:
    """``attempt()``, retried after a transport error; the last error named with ``where`` once they run out.

    Raises:
        FileNotFoundError: the object is not there (no retry mends that).
        ShardIntegrityError: retries ran out.
    """
    for failures in range(1, RETRIES + 1):
        try:
            return attempt()
        except (FileNotFoundError, *NOT_TRANSIENT):
            raise
        except Exception as exc:  # noqa: BLE001 - transports raise assorted types (aiohttp, botocore, OSError)
            if failures == RETRIES:
                raise ShardIntegrityError(f"{where}: {type(exc).__name__}: {exc}; gave up after {RETRIES} "
                                          f"attempts") from exc
            time.sleep(BACKOFF_S * 2 ** (failures - 1))
    raise AssertionError("unreachable")


def _get(fs: Any, path: str, where: str) -> bytes:
    """A whole small object (manifest, index) by one GET (``start=0``: s3fs then sends no HEAD first)."""
    return _retrying(lambda: fs.cat_file(path, start=0), where)


def download(fs: Any, path: str, url: str, record: dict[str, Any], handle: BinaryIO) -> str:
    """Write the shard at ``path`` (``record``'s ``bytes`` long) into ``handle`` by ranged reads; its sha256.

    A short or failed read is retried from the byte reached (:data:`RETRIES` times in a row without progress);
    a finished download whose sha256 differs from the record's starts over once more, counted as a failure.

    Raises:
        ShardIntegrityError: retries ran out, the object is missing, or the bytes never hash to the record's
            sha256 (the message names ``url``, the shard and the last problem).
    """
    size, got, digest, failures, problem = int(record["bytes"]), 0, hashlib.sha256(), 0, ""
    handle.seek(0)
    while True:
        reached = got
        try:
            while got < size:
                want = min(CHUNK, size - got)
                block = fs.cat_file(path, start=got, end=got + want)
                block = block[:want]  # a server ignoring the range must not push bytes past the shard's end
                handle.write(block)
                digest.update(block)
                got += len(block)
                if len(block) < want:
                    raise EOFError(f"short read: {len(block)} of {want} bytes at offset {got - len(block)}")
            handle.flush()
            if (sha := digest.hexdigest()) == record["sha256"]:
                return sha
            problem = (f"sha256 {sha[:16]}..., the manifest says {record['sha256'][:16]}... (altered in transfer "
                       f"or on the remote)")
            got, digest = 0, hashlib.sha256()
            handle.seek(0)
        except FileNotFoundError as exc:
            raise ShardIntegrityError(f"{url}: shard {record['name']} is missing on the remote ({exc})") from exc
        except NOT_TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - transports raise assorted types (aiohttp, botocore, OSError)
            problem = f"{type(exc).__name__}: {exc} (at byte {got} of {size})"
        failures = 1 if got > reached else failures + 1
        if failures >= RETRIES:
            raise ShardIntegrityError(f"{url}: shard {record['name']}: {problem}; gave up after {RETRIES} attempts "
                                      f"in a row (a truncated object, or a connection that keeps dropping)")
        time.sleep(BACKOFF_S * 2 ** (failures - 1))


def locate(source: str, split: str, shards_root: str | Path,
           storage_options: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """The URL of the split and its manifest's bytes: ``source`` itself, ``source/<split>``, or
    ``shards_root/<source>/<split>`` when ``shards_root`` is a URL; the first that holds a manifest.

    Raises:
        ShardIntegrityError: none holds a manifest (all candidates named), or retries ran out.
    """
    candidates = [source.rstrip("/"), f"{source.rstrip('/')}/{split}"] if is_url(source) else \
        [f"{str(shards_root).rstrip('/')}/{source}/{split}"]
    for url in candidates:
        fs, path = filesystem(url, storage_options)
        try:
            return url, _get(fs, f"{path}/{MANIFEST}", f"{url}/{MANIFEST}")
        except FileNotFoundError:
            continue
    raise ShardIntegrityError(f"no completed shards for {source!r} split {split!r} (looked for {MANIFEST} in "
                              f"{' and '.join(candidates)}); upload a split written by `mmdata shard`")


def open_remote(url: str, manifest: bytes | None = None, *, cache_dir: str | Path | None = None,
                cache_bytes: int | None = None, storage_options: dict[str, Any] | None = None) -> SplitShards:
    """Open a remote split: manifest, index and shard listing checked as :meth:`SplitShards.open` does.

    Args:
        url: the split's URL.
        manifest: its manifest's bytes when already fetched (:func:`locate`), else None.

    Raises:
        ShardIntegrityError: missing or unreadable manifest or index, a shard missing or of another size on the
            remote, or an index count that disagrees with the manifest (the URL is named).
    """
    fs, path = filesystem(url, storage_options)
    try:
        text = manifest if manifest is not None else _get(fs, f"{path}/{MANIFEST}", f"{url}/{MANIFEST}")
        raw = _get(fs, f"{path}/{INDEX}", f"{url}/{INDEX}")
    except FileNotFoundError as exc:
        raise ShardIntegrityError(f"{url}: {exc} not found on the remote (an incomplete upload?)") from exc
    records = _parsed(lambda tmp: read_manifest(tmp.parent), text, f"{url}/{MANIFEST}", MANIFEST)
    index = _parsed(read_index, raw, f"{url}/{INDEX}", INDEX)
    fs.invalidate_cache(path)  # a listing cached by an earlier open may predate a re-upload
    listed = _retrying(lambda: fs.ls(path, detail=True), url)
    sizes = {os.path.basename(entry["name"].rstrip("/")): entry.get("size") for entry in listed}
    directory, limit = cache_settings(cache_dir, cache_bytes)
    remote = RemoteSplit(url, {r["name"]: r for r in records["shards"]}, str(directory), limit,
                         dict(storage_options or {}))
    return SplitShards.checked(url, records, index, functools.partial(_check_remote, url, sizes), remote=remote)


def open_split(source: str | Path, split: str, shards_root: str | Path, *, verify: bool = False,
               cache_dir: str | Path | None = None, cache_bytes: int | None = None,
               storage_options: dict[str, Any] | None = None) -> SplitShards:
    """A split by corpus name, directory or URL (see :func:`mmdata.load`): remote through
    :func:`open_remote` (fetched shards are always hashed, so ``verify`` is implied), local through
    :meth:`SplitShards.open`."""
    if not (is_url(source) or is_url(str(shards_root))):
        return SplitShards.open(resolve_split_dir(source, split, shards_root), verify=verify)
    url, manifest = locate(str(source), split, shards_root, storage_options)
    return open_remote(url, manifest, cache_dir=cache_dir, cache_bytes=cache_bytes, storage_options=storage_options)


def _parsed(parse: Callable[[Path], Any], data: bytes, where: str, name: str) -> Any:
    """``parse`` of a temporary copy of ``data`` named ``name`` (the local parsers and their checks), its
    errors naming ``where`` (the URL)."""
    with tempfile.TemporaryDirectory(prefix="mmdata-remote-") as tmp:
        copy = Path(tmp) / name
        copy.write_bytes(data)
        try:
            return parse(copy)
        except ShardIntegrityError as exc:
            raise ShardIntegrityError(f"{where}: {str(exc).split(': ', 1)[-1]}") from exc


def _check_remote(url: str, sizes: dict[str, int | None], record: dict[str, Any], rows: int) -> None:
    """A shard of a remote split against its manifest record: listed, of the recorded size, counted."""
    name = record["name"]
    if name not in sizes:
        raise ShardIntegrityError(f"{url}/{name}: shard listed in the manifest is missing on the remote")
    check_record(f"{url}/{name}", record, rows, sizes[name], held=" on the remote")


class RemoteReader(MemberReader):
    """A :class:`MemberReader` whose shard files are verified cached copies fetched on first use.

    Each process (main or loader worker) builds its own; a batch's shards are held in the cache while it is
    read and released after it, so only batches in progress pin shards (other processes may evict the rest).
    """

    def __init__(self, remote: RemoteSplit, directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """Plan the reads of a remote split (arguments after ``remote`` as :class:`MemberReader`'s)."""
        self.remote, self.cache = remote, ShardCache(remote.cache_dir, remote.cache_bytes)
        super().__init__(self.cache.directory, *args, **kwargs)
        self.url = str(directory)
        self.records = [remote.records[name] for name in self.shard_names]
        # Keyed by content: the verified-once records (mmdata.shards.verified) follow the cached file.
        self.paths = [str(self.cache.path(r["sha256"])) for r in self.records]
        self._fs: tuple[Any, str] | None = None

    def _fd(self, code: int) -> int:
        fd = self.fds.get(code)
        if fd is None:
            if self._fs is None:  # per process: a worker builds its own filesystem (and event loop) after fork
                self._fs = filesystem(self.url, self.remote.storage_options)
            fs, path = self._fs
            record = self.records[code]
            url = f"{self.url}/{record['name']}"
            fetch = functools.partial(download, fs, f"{path}/{record['name']}", url, record)
            fd = self.fds[code] = self.cache.acquire(record, fetch, url)
        return fd

    def _fail(self, row: int, name: str, problem: str) -> ShardIntegrityError:
        code = self.code[row]
        return ShardIntegrityError(f"{self.url}/{self.shard_names[code]} (cached as {self.paths[code]}): sample "
                                   f"{self.keys[row]} field {name}: {problem}")

    def read_batch(self, rows: Any, empty: Empty = np.empty) -> list:
        """As :meth:`MemberReader.read_batch`; the batch's shards are held in the cache only while it is read."""
        try:
            return super().read_batch(rows, empty)
        finally:
            self.close()  # released: between batches any process may evict them (re-acquiring is one flock)
