"""Worker processes that end with the process that forked them.

A forked worker inherits every descriptor its parent had open at the fork: the parent's end of the worker's own
pipe (so the worker never reads end-of-file when the parent is gone) and the output lock's ``flock`` (so an
orphaned writer worker keeps the output locked, and the next run fails with a LockError). A writer killed with
SIGKILL (or by the OOM killer) left its workers blocked on their pipes for good, holding the lock.

Each worker calls :func:`end_with_parent` first: it closes the parent's ends of the pipes it inherited and, on
Linux, asks the kernel to send it SIGKILL when its parent exits (``PR_SET_PDEATHSIG``), which also stops a worker
busy in a task. That signal follows the *thread* that forked the worker, so it is only for workers whose life is
inside one call of that thread (the writing engines'); :mod:`mmdata.shards.pool`'s persistent workers, which may
outlive the thread that started them, only close the ends (a worker blocked reading then gets end-of-file).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterable
from multiprocessing.connection import Connection

_PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int, parent_ends: Iterable[Connection], kill: bool = True) -> None:
    """In a worker forked by process ``parent``: close ``parent_ends`` (the parent's ends of the pipes this worker
    inherited) and, with ``kill`` on Linux, be killed when the parent exits; exit now if it already has."""
    for end in parent_ends:
        end.close()
    if kill and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect: nobody will send it
        os._exit(0)
