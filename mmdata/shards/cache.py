"""The local cache of remote shards: a directory bounded in bytes, shared safely by processes.

Layout: ``<dir>/<sha256>.tar`` (a shard, named by its content hash from the manifest, so versions and URLs
holding the same shard share one copy and a changed shard can never be mistaken for the cached one),
``<dir>/<sha256>.ok`` (the file version last verified, see below), ``<dir>/<sha256>.used`` (an empty stamp
whose mtime orders the LRU; the shard's own time stamps are left alone because the member reader's
verified-once records are keyed by them, see :mod:`mmdata.shards.verified`),
``<dir>/.<sha256>.<random>.partial`` (a download in progress) and ``<dir>/.lock`` (held while space is
reserved or freed).

Concurrency (loader workers, several training processes): a reader holds a shared ``flock`` on every shard it
has open; eviction takes an exclusive non-blocking ``flock`` first, so only shards no process holds are
removed. A download is written under a temporary name, locked exclusively, sized up front (``ftruncate``: the
reservation other processes see while it runs) and renamed into place with ``os.replace`` only after its size
and sha256 matched the manifest; a ``.partial`` left by a killed process is unlocked and removed by the next
scan. A reader that opened a shard just as it was evicted sees ``st_nlink == 0`` after locking and fetches it
again.

Verified before use: a fetched shard is hashed while it downloads; a cached one is re-hashed (sha256 against the
manifest) the first time a process opens it, unless ``<dir>/<sha256>.ok`` records that this very file version
passed: the file's ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``, the key of
:mod:`mmdata.shards.verified`'s verified-once records, written only once the file has been unchanged for
:data:`~mmdata.shards.verified.SETTLE_NS` (a change within a time stamp's tick could keep the key). A cached
shard whose bytes were changed by a write (an edit, a bad copy) has another key, fails the re-hash and is
fetched again; silent media corruption that keeps the key is caught by the crc32 of every member read.
The bound counts the sizes of cached shards and reservations; the shards in use at once by all processes must
fit in it, else a fetch waits (other readers release their shards between batches) and then fails naming the
limit.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from mmdata.errors import ShardIntegrityError
from mmdata.shards.verified import SETTLE_NS, stat_key

#: Cache directory when neither the ``cache_dir`` argument nor ``$MMDATA_CACHE`` names one.
DEFAULT_DIR = Path("~/.cache/mmdata")
#: Cache bound in bytes when neither ``cache_bytes`` nor ``$MMDATA_CACHE_BYTES`` gives one (16 GiB).
DEFAULT_BYTES = 16 << 30
#: How long a fetch waits for other processes to release shards before failing (seconds).
ROOM_WAIT_S = 60.0
#: A process re-stamps a shard's LRU time at most this often (one ``utime`` per shard per second).
STAMP_EVERY_S = 1.0
_CHUNK = 1 << 20

_VERIFIED: set[tuple] = set()  # (sha256, stat key) of cached shards this process hashed or downloaded
_STAMPED: dict[str, float] = {}

#: ``download(handle) -> sha256 hex`` writes a shard's bytes into ``handle`` (retrying short reads itself).
Download = Callable[[BinaryIO], str]


def cache_settings(cache_dir: str | Path | None, cache_bytes: int | None) -> tuple[Path, int]:
    """The cache directory and bound: the arguments, else ``$MMDATA_CACHE`` / ``$MMDATA_CACHE_BYTES``, else
    the defaults (``~/.cache/mmdata/shards``, 16 GiB)."""
    root = Path(cache_dir or os.environ.get("MMDATA_CACHE") or DEFAULT_DIR).expanduser()
    limit = int(cache_bytes if cache_bytes is not None else os.environ.get("MMDATA_CACHE_BYTES", DEFAULT_BYTES))
    if limit <= 0:
        raise ValueError(f"cache_bytes must be positive, got {limit}")
    return root / "shards", limit


def forget() -> None:
    """Drop this process's records of verified cached shards and stamps (as a fresh process starts)."""
    _VERIFIED.clear()
    _STAMPED.clear()


def _hash_fd(fd: int) -> str:
    digest, offset = hashlib.sha256(), 0
    while block := os.pread(fd, _CHUNK, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class ShardCache:
    """One cache directory with a byte bound (see the module docstring).

    Args:
        directory: where cached shards live (created on first use).
        limit: the most bytes of shards (and reservations) the directory holds.
    """

    def __init__(self, directory: str | Path, limit: int) -> None:
        self.directory, self.limit = Path(directory), int(limit)

    def path(self, sha256: str) -> Path:
        """Where the shard with this content hash is cached."""
        return self.directory / f"{sha256}.tar"

    def acquire(self, record: dict[str, Any], download: Download, where: str) -> int:
        """A read-only descriptor of the verified cached copy of the shard ``record`` (a manifest shard record),
        holding a shared lock (in use) until closed; fetched with ``download`` when absent or corrupted.

        Raises:
            ShardIntegrityError: the download failed (see ``download``), or the shard cannot fit in the bound.
        """
        sha, size = record["sha256"], int(record["bytes"])
        path = self.path(sha)
        for _ in range(4):  # evicted or corrupted between our steps: fetch and look again
            fd = self._open_locked(path)
            if fd is not None:
                if self._verified(fd, sha, size):
                    self._stamp(sha)
                    return fd
                os.close(fd)  # changed since it was cached: the fetch below replaces it
            self._fetch(path, record, download, where)
        raise ShardIntegrityError(f"{where}: the cached copy {path} kept disappearing or failing its sha256 "
                                  f"(another process evicting it, or a failing disk)")

    def _verified(self, fd: int, sha: str, size: int) -> bool:
        """Whether the open cached shard holds the manifest's bytes: known to this process, recorded as checked
        by another (``<sha>.ok`` names the same file version), or re-hashed now."""
        st = os.fstat(fd)
        key = stat_key(st)
        if (sha, key) in _VERIFIED:
            return True
        record = self.directory / f"{sha}.ok"
        try:
            recorded = tuple(int(v) for v in record.read_text().split())
        except (FileNotFoundError, ValueError):
            recorded = ()
        if recorded != key and (st.st_size != size or _hash_fd(fd) != sha):
            return False
        _VERIFIED.add((sha, key))
        # As verified.py: a version changed within the time stamps' tick could keep its key; record it settled.
        if recorded != key and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLE_NS:
            record.write_text(" ".join(map(str, key)))
        return True

    def _open_locked(self, path: Path) -> int | None:
        """``path`` opened and share-locked, or None when absent or evicted before the lock was taken."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink == 0:  # unlinked by an eviction between our open and our lock
            os.close(fd)
            return None
        return fd

    def _stamp(self, sha: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - _STAMPED.get(sha, -STAMP_EVERY_S) >= STAMP_EVERY_S:
            _STAMPED[sha] = now
            stamp = self.directory / f"{sha}.used"
            try:
                os.utime(stamp)
            except FileNotFoundError:
                stamp.touch()

    def _fetch(self, path: Path, record: dict[str, Any], download: Download, where: str) -> None:
        """Download the shard to a reserved temporary file, check it and rename it to ``path``."""
        sha, size = record["sha256"], int(record["bytes"])
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{sha}.{secrets.token_hex(6)}.partial"
        fd = self._reserve(tmp, size, where)
        try:
            with os.fdopen(os.dup(fd), "wb") as handle:
                got = download(handle)
            if got != sha:  # download() checks it; kept here so no unchecked file is ever renamed into place
                raise ShardIntegrityError(f"{where}: downloaded sha256 {got[:16]}..., manifest says {sha[:16]}...")
            with self._locked():  # so a scan under the lock sees the reservation or the shard, never neither
                os.replace(tmp, path)
            _VERIFIED.add((sha, stat_key(os.fstat(fd))))
            self._stamp(sha, force=True)  # a fresh copy: its stamp went with the evicted one
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)

    def _reserve(self, tmp: Path, size: int, where: str) -> int:
        """Create ``tmp`` (locked, ``size`` bytes long) once the bound has room for it; its descriptor."""
        if size > self.limit:
            raise ShardIntegrityError(f"{where}: the shard's {size} bytes exceed the cache bound of {self.limit} "
                                      f"bytes ({self.directory}); raise cache_bytes (or $MMDATA_CACHE_BYTES)")
        deadline, pause = time.monotonic() + ROOM_WAIT_S, 0.01
        while True:
            with self._locked():
                if self._make_room(size):
                    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.ftruncate(fd, size)
                    return fd
            if time.monotonic() > deadline:
                raise ShardIntegrityError(
                    f"{where}: no room for {size} bytes in the cache {self.directory} (bound {self.limit} bytes) "
                    f"after {ROOM_WAIT_S:.0f} s: the shards in use by all readers fill it; raise cache_bytes")
            time.sleep(pause)  # other readers release their shards between batches
            pause = min(pause * 2, 0.5)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _make_room(self, size: int) -> bool:
        """Evict least recently used shards no process holds until ``size`` more bytes fit; whether they do."""
        used, idle = 0, []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".partial"):
                used += self._partial_size(entry)
            elif entry.name.endswith(".tar"):
                try:
                    st = entry.stat()
                    stamp = os.stat(entry.path[:-4] + ".used").st_mtime_ns
                except FileNotFoundError:
                    stamp = 0  # no stamp: never used since cached, or evicted under our feet
                    if not os.path.exists(entry.path):
                        continue
                used += st.st_size
                idle.append((stamp, entry.path, st.st_size))
        for _, path, nbytes in sorted(idle):
            if used + size <= self.limit:
                break
            used -= nbytes if self._evict(path) else 0
        return used + size <= self.limit

    @staticmethod
    def _partial_size(entry: os.DirEntry) -> int:
        """A download's reservation; a ``.partial`` nobody holds (its process died) is removed and counts 0."""
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            if _try_lock(fd, fcntl.LOCK_EX):
                os.unlink(entry.path)
                return 0
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    @staticmethod
    def _evict(path: str) -> bool:
        """Remove the cached shard at ``path`` unless a reader holds it; whether it was removed."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            if not _try_lock(fd, fcntl.LOCK_EX):
                return False
            os.unlink(path)
            for sidecar in (".used", ".ok"):
                Path(path[:-4] + sidecar).unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)
