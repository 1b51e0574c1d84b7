"""Every error class a user of mmdata catches, in one ground-floor module (anything may import it), and
:func:`run_guarded`, which turns them into one line and an exit status for the CLI and the DVC stages, and
:func:`check_names`, the one check of configuration keys (with :data:`RENAMED`, the retired names).

Each class is an expected failure: the ``mmdata`` command prints its message on one line and exits non-zero
(the traceback only with ``--debug``). Messages name the file, the sample key where there is one, the reason
and the fix.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable
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


class BadInputError(MmdataError, ValueError):
    """Too many raw items were skipped (or none written); the message carries the skip summary."""


class ShardIntegrityError(MmdataError, RuntimeError):
    """A shard split on disk disagrees with its manifest (missing, truncated, altered, miscounted).

    The message always names the shard (or manifest) path and, where known, the sample key and field.
    """


class LedgerError(ShardIntegrityError):
    """Counts do not reconcile: raw != written + skipped (+ ignored), or the index disagrees with the tars."""


class RemoteTraceback(MmdataError):
    """Never raised: the cause attached to an error that a shard-writing worker process raised, holding that
    process's traceback as text (a traceback does not survive the trip between processes)."""


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


#: Keys renamed so that one concept has one name in params, code, CLI and docs (issue 11), old -> new. There is
#: no alias: wherever keys are checked (:func:`check_names`: params.yaml blocks, reader options from params,
#: the CLI's ``--option`` or Python, synth options) an old key fails with a ConfigError naming its new name.
RENAMED: dict[str, str] = {
    "size": "image_size",  # nyuv2 reader: resize at shard time (snli_ve's synth ``size`` is the raw side)
    "frame_size": "image_size",  # crema_d reader: video frames resized at shard time
    "depth_dir": "depth_source",  # sunrgbd reader: which depth (raw depth/ or refined depth_bfx/)
    "dev": "valid",  # synth counts of mmimdb, hateful_memes, snli_ve (files keep the release's "dev" names)
}


def check_names(given: Iterable[str], allowed: Iterable[str], what: str, where: str, fix: str = "") -> None:
    """Raise ConfigError naming the keys of ``given`` not in ``allowed``, a renamed key's new name, the valid ones.

    A key of :data:`RENAMED` is named with its new name only where the new name is valid (``size`` stays a plain
    unknown key for a reader without ``image_size``).

    Args:
        given: the keys supplied (a params.yaml block, reader options, keyword arguments).
        allowed: the valid keys.
        what: what the keys are, plural-ready ("key(s)", "reader option(s)").
        where: where they were found ("in corpora.mosi of params.yaml").
        fix: appended to the message (where to fix them).
    """
    allowed = set(allowed)
    unknown = sorted(set(given) - allowed)
    if not unknown:
        return
    renamed = [f"{old!r} is now {RENAMED[old]!r}" for old in unknown if RENAMED.get(old) in allowed]
    note = f" ({'; '.join(renamed)}: renamed, the old name is not accepted)" if renamed else ""
    raise ConfigError(f"unknown {what} {unknown} {where}{note}; valid: {sorted(allowed)}{fix}")


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
