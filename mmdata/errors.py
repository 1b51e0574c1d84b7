"""Every error class a user of mmdata catches, in one ground-floor module (anything may import it).

Each class is an expected failure: the ``mmdata`` command prints its message on one line and exits non-zero
(the traceback only with ``--debug``). Messages name the file, the sample key where there is one, the reason
and the fix.
"""
from __future__ import annotations

from pathlib import Path


class MmdataError(Exception):
    """Base of every expected mmdata failure (the CLI prints these without a traceback)."""


class ConfigError(MmdataError, ValueError):
    """A configuration mistake (missing root, unknown corpus, unknown option); the message names the fix."""


class SampleError(MmdataError, ValueError):
    """A sample failed a check; ``reason`` is the short code that goes into the skip report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class FileError(SampleError):
    """A SampleError naming the file at fault (``path``), so the Skip points at it."""

    def __init__(self, reason: str, detail: str, path: Path) -> None:
        super().__init__(reason, f"{Path(path).name}: {detail}")
        self.path = Path(path)


class CodecError(MmdataError, ValueError):
    """Bytes that cannot be decoded as the declared codec."""


class BadInputError(MmdataError, RuntimeError):
    """Too many raw items were skipped (or none written); the message carries the skip summary."""


class ShardIntegrityError(MmdataError, RuntimeError):
    """A shard split on disk disagrees with its manifest (missing, truncated, altered, miscounted).

    The message always names the shard (or manifest) path and, where known, the sample key and field.
    """


class LedgerError(ShardIntegrityError):
    """Counts do not reconcile: raw != written + skipped (+ ignored), or the index disagrees with the tars."""


class OutputError(MmdataError, RuntimeError):
    """An output path mmdata refuses to write: it holds files mmdata did not write, or contains the raw root."""


class LockError(MmdataError, RuntimeError):
    """Another live run holds the lock of the same output (the message names its pid and the lock file)."""


class DiskFullError(MmdataError, OSError):
    """The disk filled up (ENOSPC) while writing; the message names the file being written."""


class UnsafeInputError(MmdataError, ValueError):
    """Untrusted input that could run code (a pickle referring to a non-data type) was refused unread."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; temporary output was removed and nothing was published."""
