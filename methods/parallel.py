"""Independent CPU jobs side by side in forked processes: the results in order, the numbers of one by one.

Small models keep a second torch thread only ~1.4x busier than one, so two one-thread jobs at a time finish
~1.4x sooner than two-thread jobs one after another (the train stage's runs, the controlled checks' models).
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0))


def run_parallel(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], processes: int) -> list[Any]:
    """``[fn(*args) for args in calls]``, in ``processes`` forked processes at once when more than one.

    The arguments and results cross process boundaries pickled (pass names, not modules). Fork, not spawn:
    the children start at once instead of importing torch again (~2 s); the caller must not have started a
    multi-threaded torch pool (it runs one-thread computation only), which a child could inherit half-locked.
    An exception in a job is raised here, with its own message.
    """
    if processes <= 1 or len(calls) <= 1:
        return [fn(*args) for args in calls]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(processes, len(calls)), mp_context=context) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [future.result() for future in futures]
