"""A decode bounded in time and isolated from crashes: the call runs in a worker process (reliability VID-04).

FFmpeg (under decord) is C code: a malformed file can make it loop without end or crash the interpreter, and
nothing inside the process can interrupt the one or survive the other. :func:`call` runs a function in a worker
process started with ``spawn`` (no threads or decoder state inherited) and kept for the next call: a call that
takes longer than its timeout is a ``timeout`` skip and a worker that dies is a ``decoder_crash`` skip; either
way the worker is stopped and the next call starts a fresh one, so the reader goes on with the next item. A
SampleError raised by the function comes back as itself; any other exception is a RuntimeError here (a bug, not
bad input). Only what the function returns crosses the process boundary, so it must be picklable.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mmdata.errors import ConfigError, SampleError

_worker: tuple[Any, Connection] | None = None  # (process, parent end of its pipe), started on first use


def _serve(conn: Connection) -> None:
    """Worker loop: receive ``(function, args)``, answer ``("ok", value)``, ``("skip", reason, detail)`` or
    ``("error", text)``, until the pipe closes."""
    while True:
        try:
            function, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", function(*args)))
        except SampleError as err:  # not picklable as an exception (two-argument constructor): sent as fields
            conn.send(("skip", err.reason, str(err)))
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def stop() -> int | None:
    """Stop the worker if one runs (kill, then wait); its exit code, or None when there was none."""
    global _worker
    if _worker is None:
        return None
    process, conn = _worker
    _worker = None
    conn.close()
    process.kill()
    process.join()
    return process.exitcode


def call(function: Callable[..., Any], args: tuple, timeout: float, what: str) -> Any:
    """``function(*args)`` run in the worker process, waited for at most ``timeout`` seconds.

    Args:
        function: a module-level function (the worker imports it by name).
        args: its arguments (picklable).
        timeout: seconds to wait for the answer.
        what: names the item in the skip (a file name).

    Raises:
        SampleError: ``timeout``, ``decoder_crash``, or the function's own.
        RuntimeError: the function raised another exception.
        ValueError: ``timeout`` is not a positive number of seconds (a configuration error, not bad input).
    """
    global _worker
    if not timeout > 0:
        raise ConfigError(f"decode timeout must be a positive number of seconds, got {timeout!r}")
    if _worker is None:
        parent, child = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
        process.start()
        child.close()  # the worker holds its end; a dead worker then reads as EOF here
        _worker = (process, parent)
    process, conn = _worker
    try:
        conn.send((function, args))
        if not conn.poll(timeout):
            stop()
            raise SampleError("timeout", f"{what}: no result after {timeout} s; the decoder was stopped")
        answer = conn.recv()
    except (EOFError, OSError):  # the worker died (a crash in C code, killed for memory)
        raise SampleError("decoder_crash", f"{what}: the decoder process died (exit code {stop()})") from None
    if answer[0] == "skip":
        raise SampleError(answer[1], answer[2])
    if answer[0] == "error":
        raise RuntimeError(f"{what}: {answer[1]}")
    return answer[1]
