"""Every error class a user of mmdata catches, in one ground-floor module (anything may import it), and
:func:`run_guarded`, which turns them into one line and an exit status for the CLI and the DVC stages.

Each class is an expected failure: the ``mmdata`` command prints its message on one line and exits non-zero
(the traceback only with ``--debug``). Messages name the file, the sample key where there is one, the reason
and the fix.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
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


#: Exit status of an expected failure, and of an interrupt (128 + SIGINT, as shells report it).
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def run_guarded(prog: str, run: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run ``run`` and turn an expected failure into one line on stderr and a non-zero status.

    Args:
        prog: what to name in the message (``mmdata shard``, ``stage shard@mosi``).
        run: the work; its return value is the exit status (None: 0).
        debug: re-raise so the traceback shows (also when ``MMDATA_DEBUG`` is set).

    Returns:
        The exit status: ``run``'s, 2 for an expected error, 130 for an interrupt.
    """
    debug = debug or bool(os.environ.get("MMDATA_DEBUG"))
    try:
        return run() or 0
    except (MmdataError, OSError) as exc:
        if debug:
            raise
        name = type(exc).__name__
        print(f"{prog}: error: {name}: {exc} (traceback: --debug or MMDATA_DEBUG=1)", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted ({exc or 'SIGINT'}); nothing was published", file=sys.stderr)
        return EXIT_INTERRUPTED
