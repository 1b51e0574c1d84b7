"""Publishing outputs safely: what may be replaced, one writer per output, and clean failure.

The rules (reliability D3, issue 10.1):

- An output is replaced only when it is an earlier mmdata output of the same corpus (recognised by its
  manifests: every entry is a split directory whose manifest names the corpus and split and which holds only the
  files the writer makes), or an empty folder. Anything else, and any output that equals or contains the raw root,
  is refused with :class:`OutputError` before a byte is written.
- Runs into one output take an exclusive ``flock`` on ``<out>.lock``. The kernel drops it when the process dies,
  so a ``kill -9`` never leaves a lock behind; a second run fails at once with :class:`LockError` (or waits).
- Temporary folders are ``<out>.tmp-<pid>`` / ``<out>.old-<pid>``; cleanup removes only those whose process is
  gone, never a live run's.
- SIGTERM is turned into :class:`Interrupted` (SIGINT already raises), so the caller's cleanup runs; ENOSPC
  becomes one :class:`DiskFullError` naming the file being written.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mmdata.errors import DiskFullError, Interrupted, LockError, OutputError, ShardIntegrityError
from mmdata.shards.manifest import INDEX, MANIFEST, read_manifest
from mmdata.shards.record import RECORD, is_mmdata_output

_TEMP = re.compile(r"^(?P<base>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


def temp_path(out: Path) -> Path:
    """The temporary folder this process writes ``out`` into (a sibling, so the final rename is atomic)."""
    return out.with_name(f"{out.name}.tmp-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs; a zombie (killed, not yet reaped) is gone: it writes nothing more."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # state is the field after the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _stale(path: Path, base: str) -> bool:
    """True for ``<base>.tmp-<pid>`` / ``<base>.old-<pid>`` whose process is gone."""
    match = _TEMP.match(path.name)
    return bool(match) and match["base"] == base and not pid_alive(int(match["pid"]))


def remove_stale(out: Path, children: tuple[str, ...] = ()) -> list[Path]:
    """Delete temporary leftovers of killed runs: ``<out>.tmp-<pid>`` beside ``out``, and the same for each
    ``out/<child>`` (split folders written one at a time).

    Only folders named after these outputs whose writing process no longer exists are removed: a concurrent
    live run's temporary folder is never touched, nor anything else.
    """
    out = Path(out)
    stale = [p for p in out.parent.iterdir() if _stale(p, out.name)] if out.parent.is_dir() else []
    if out.is_dir():
        stale += [p for p in out.iterdir() if any(_stale(p, child) for child in children)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return stale


_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-\d{6}\.tar$")


def _foreign_in_split(split_dir: Path, corpus: str, split: str) -> str | None:
    """Why ``split_dir`` is not an earlier mmdata split of ``corpus``/``split`` (None when it is one)."""
    try:
        manifest = read_manifest(split_dir)
    except ShardIntegrityError:
        held = ", ".join(sorted(p.name for p in split_dir.iterdir())[:3])
        return f"{split_dir} holds {held} and no mmdata {MANIFEST}"
    if (manifest.get("corpus"), manifest.get("split")) != (corpus, split):
        return f"{split_dir / MANIFEST} belongs to {manifest.get('corpus')}/{manifest.get('split')}, not {corpus}/{split}"
    for entry in split_dir.iterdir():
        shard = _SHARD_NAME.match(entry.name)
        ours = entry.name in (MANIFEST, INDEX) or (shard and shard["prefix"] == f"{corpus}-{split}")
        if not ours or not entry.is_file():  # a file symlink (DVC's symlink cache) is fine: unlinking keeps its target
            return f"{entry} was not written by mmdata"
    return None


def _foreign_in_corpus(out: Path, corpus: str, splits: tuple[str, ...]) -> str | None:
    for entry in sorted(out.iterdir()):
        temp = _TEMP.match(entry.name)
        if entry.name == RECORD and not is_mmdata_output(out, corpus):
            return f"{entry} is not a record of {corpus}"
        if (temp and temp["base"] in splits) or (entry.name == RECORD and entry.is_file()):
            continue
        if not entry.is_dir() or entry.is_symlink():
            return f"{entry} was not written by mmdata"
        problem = _foreign_in_split(entry, corpus, entry.name)
        if problem:
            return problem
    return None


def check_output(out: Path, corpus: str, *, split: str | None = None, splits: tuple[str, ...] = (),
                 raw_root: Path | None = None) -> None:
    """Refuse an output mmdata may not replace (see the module docstring).

    Args:
        out: the corpus output folder (or one split's folder when ``split`` is given).
        corpus: the corpus being written.
        split: set when ``out`` is a single split's folder (``write_split``).
        splits: the corpus's splits (their temporary folders inside ``out`` are tolerated).
        raw_root: the raw corpus being read; an output that equals or contains it is refused.

    Raises:
        OutputError: naming the path at fault and the fix.
    """
    out = Path(out)
    if raw_root is not None:
        target, raw = out.resolve(), Path(raw_root).resolve()
        if raw == target or target in raw.parents:
            raise OutputError(f"{out}: the output folder equals or contains the raw corpus {raw_root}; writing it "
                              f"would replace the raw data. Choose an output outside it, e.g. data/shards/{corpus}")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"{out}: exists and is not a folder; mmdata replaces only its own output folders. "
                          f"Choose another output path or remove it yourself")
    if not out.is_dir() or not any(out.iterdir()):
        return
    problem = _foreign_in_split(out, corpus, split) if split else _foreign_in_corpus(out, corpus, splits)
    if problem:
        example = "" if split else f" (e.g. {out / corpus})"
        raise OutputError(f"{out}: not an earlier mmdata output of {corpus} ({problem}); mmdata replaces only its "
                          f"own output. Choose a new or empty folder{example} or move the files away")


@contextmanager
def output_lock(out: Path, *, wait: bool = False, poll: float = 0.2) -> Iterator[Path]:
    """Hold the exclusive lock of output ``out`` (``<out>.lock``) for the duration of the block.

    The lock file is removed on release, so a finished run leaves nothing next to its output; a process killed
    while holding it leaves a file whose ``flock`` the kernel has already dropped.

    Raises:
        LockError: another live process holds the lock and ``wait`` is False.
    """
    path = Path(out).with_name(Path(out).name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if not wait:
                raise LockError(f"{path}: another mmdata run (pid {holder}) is writing {out}; wait for it to "
                                f"finish, or pass --wait to queue behind it") from None
            time.sleep(poll)
            continue
        # The holder before us may have unlinked the file after we opened it: lock the path's current file.
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def replace_dir(src: Path, dst: Path) -> None:
    """Move the completed folder ``src`` into place, replacing ``dst`` (already checked by :func:`check_output`)."""
    old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def disk_full_names(current: Callable[[], object]) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT inside the block into one :class:`DiskFullError` naming ``current()``, the file written."""
    try:
        yield
    except DiskFullError:  # named already, by the block closest to the write (a shard's background fsync)
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in str(exc):
            raise
        raise DiskFullError(errno.ENOSPC, f"{current()}: no space left on device (ENOSPC) while writing it; "
                                          f"nothing was published. Free space or write to another disk") from exc


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(f"received {signal.Signals(signum).name}; temporary output removed, nothing published")


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted` (like SIGINT's KeyboardInterrupt) in the main thread.

    Why: Python's default SIGTERM kills the process without running ``finally`` blocks, which would leave the
    temporary folder behind; raising lets the writer remove it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
