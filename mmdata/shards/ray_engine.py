"""Shard writing on Ray (``mmdata shard --engine ray``): the same bytes as the local engine, from Ray tasks.

The split is written by :class:`mmdata.shards.parted.PartedSplit` (two phases: parts read, checked and encoded
by tasks; shards planned by the driver from exact payload sizes and written by tasks) with Ray as its task
backend (:class:`RayTasks`): the prepared samples stay in Ray's object store between the phases. A task whose
worker dies is retried by Ray (``max_retries``); a task that keeps dying or fails makes the run fail: the
tasks still running are cancelled and waited for, and nothing is published.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from mmdata.corpora.base import Skip
from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.shards.parted import PartedSplit, SplitSource
from mmdata.types import Sample

#: Retries of a task whose worker process died (Ray's ``max_retries``); a task's own error is never retried.
MAX_RETRIES = 3
#: Seconds to wait for cancelled tasks to stop before the temporary output is removed.
CANCEL_WAIT = 60.0


def import_ray() -> Any:
    """The ``ray`` module, or ConfigError telling how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("engine 'ray' needs the optional Ray extra: pip install 'mmdata[ray]'") from exc
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected for the block: the session already initialised in this process if there is one, else the
    cluster at ``address``, else a local instance with ``num_cpus`` CPUs (None: all). Shuts down only a
    session it started."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


class RayTasks:
    """Ray as the task backend of :class:`~mmdata.shards.parted.PartedSplit` (see :class:`~mmdata.shards.
    parted.Tasks`): one remote function per task function, retried when its worker dies."""

    #: A Ray task's process may be gone when the driver would wait for its syncs: each fsyncs its shard itself.
    background_sync = False

    def __init__(self, ray: Any) -> None:
        self.ray, self.cpus = ray, int(ray.cluster_resources().get("CPU", 1))
        self.remotes: dict[tuple[Callable[..., Any], int], Any] = {}

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def submit(self, function: Callable[..., Any], *args: Any, returns: int = 1) -> Any:
        remote = self.remotes.get((function, returns))
        if remote is None:
            remote = self.ray.remote(num_returns=returns, max_retries=MAX_RETRIES)(function)
            self.remotes[function, returns] = remote
        return remote.remote(*args)

    def get(self, ref: Any, what: str) -> Any:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BaseException):
                raise exc.cause from exc
            raise
        except exceptions.RayError as exc:
            raise ShardIntegrityError(
                f"{what}: a Ray task (reading and encoding a part, or writing a shard) failed for good "
                f"({type(exc).__name__}, after up to {MAX_RETRIES} retries): {exc}; nothing published") from exc

    def sync(self) -> None:
        """Nothing to wait for: every shard-writing task fsynced its shard before it returned."""

    def cancel(self, refs: list[Any]) -> None:
        for ref in refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone: nothing left to stop
                pass
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT)


class RaySplit(PartedSplit):
    """A split written by Ray tasks (:class:`~mmdata.shards.parted.PartedSplit` on :class:`RayTasks`)."""

    def __init__(self, ray: Any, source: SplitSource | Iterable[Sample | Skip], part_size: int) -> None:
        super().__init__(RayTasks(ray), source, part_size)
