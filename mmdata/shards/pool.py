"""Persistent worker processes that run a rank's :class:`~mmdata.shards.stream.EpochStream` (design section 5b).

Each worker gets a pipe. The main process sends it ``start`` (generation, epoch, batch, epoch step); the worker
then produces its share of the stream (items ``w, w + W, ...``: whole batches, epoch after epoch) as long as it
holds credits, writing each batch into a shared-memory slot (:mod:`mmdata.shards.slots`) and sending a small
message with its (epoch, batch) tag. The main process reads item ``i`` from worker ``i % W``, checks the tag and
returns a credit, so at most ``prefetch_factor`` batches per worker are ahead. A later iteration that continues
where the stream stands (the next epoch, as a training loop's ``set_epoch`` asks, or the same epoch again when
it was repeated) takes the batches already prefetched; anything else sends a new ``start`` with a new
generation, and messages of older generations are dropped on arrival (their slots handed back).

Compared with a torch DataLoader this has no index queue, no feeder threads and no per-epoch worker restart;
what DataLoader gives is kept: worker errors re-raise in the main process (``ExceptionWrapper``), a worker
that dies (OOM killer) is an error naming its pid, never a hang; workers run torch on one thread and ignore
Ctrl-C (the main process gets it).
"""
from __future__ import annotations

import itertools
import multiprocessing
import select
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from torch._utils import ExceptionWrapper

from mmdata.shards.slots import Packed, Slots, forget, register, release_stale
from mmdata.shards.stream import EpochStream

_TOKENS = itertools.count()  # tells apart the slots of pools alive at once in one process


def _produce(stream: EpochStream, slots: Slots, conn: Connection, worker: int, workers: int,
             start: tuple) -> tuple | None:
    """Run one generation of the stream until a new command arrives (returned) or the stream ends (None)."""
    _, generation, epoch, batch, step, credits = start
    slots.restart()
    waiting = select.poll()  # registered once: Connection.poll builds a selector per call
    waiting.register(conn.fileno(), select.POLLIN)
    for e, b, rows in stream.worker_items(worker, workers, epoch, batch, step):
        while credits == 0 or waiting.poll(0):
            message = conn.recv()  # blocks while the main process holds all our batches
            if message[0] != "credit":
                return message
            credits += message[1] == generation
        try:
            arena = slots.arena()  # collate straight into a free slot: no second copy of the batch
            batch = stream.batch(e, rows, arena.empty if arena is not None else np.empty)
            conn.send(("batch", generation, e, b, slots.write(batch, arena)))
        except Exception:  # noqa: BLE001 - any error in a batch is the main process's to raise
            conn.send(("error", generation, e, b, ExceptionWrapper(where=f"in DataLoader worker {worker}")))
            return None
        credits -= 1
    return None


def _work(stream: EpochStream, conn: Connection, worker: int, workers: int) -> None:
    """A worker process: follow ``start`` commands until ``stop`` or the main process goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)  # two workers on two cores: intra-op threads would only contend
    slots = Slots(stream.token, worker, stream.released.numpy()[worker])
    try:
        command = conn.recv()
        while command[0] != "stop":
            if command[0] == "start":
                command = _produce(stream, slots, conn, worker, workers, command) or conn.recv()
            else:  # a credit that arrived after its generation ended
                command = conn.recv()
    except (EOFError, OSError):  # the main process closed the pipe or exited
        pass
    finally:
        stream.close()


class WorkerPool:
    """Worker processes for one Loader, started at the first epoch and kept across epochs when ``persistent``.

    Args:
        stream: the stream the workers run.
        workers: worker processes (> 0).
        prefetch_factor: batches each worker may have ready ahead of the consumer.
        pin_memory: copy each batch into pinned memory (for asynchronous GPU copies).
        persistent: keep the workers between epochs (else they start and stop with every epoch).
    """

    def __init__(self, stream: EpochStream, workers: int, *, prefetch_factor: int, pin_memory: bool,
                 persistent: bool) -> None:
        if prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
        self.stream, self.workers, self.prefetch = stream, workers, prefetch_factor
        self.pin_memory, self.persistent = pin_memory, persistent
        self.processes: list[Any] = []
        self.conns: list[Connection] = []
        self.next: tuple[int, int] | None = None  # (epoch, batch) the stream stands at, when known
        self.last_epoch: int | None = None
        self.step = self.generation = self.iteration = self.item = 0
        stream.token = next(_TOKENS)

    def _start_workers(self) -> None:
        # Slots per worker: its batches in flight, the one it writes and the one the consumer holds.
        self.stream.released = torch.zeros(self.workers, self.prefetch + 2, dtype=torch.int64).share_memory_()
        register(self.stream.token, self.stream.released)
        context = multiprocessing.get_context()
        for worker in range(self.workers):
            ours, theirs = context.Pipe()
            process = context.Process(target=_work, args=(self.stream, theirs, worker, self.workers), daemon=True)
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(ours)

    def _restart(self, epoch: int, start: int) -> None:
        if not self.processes:
            self._start_workers()
        # Guess what follows this epoch: the same epoch again when it was repeated (an evaluation loader
        # without set_epoch), else the next one (a training loop's set_epoch(e + 1)).
        self.step = 0 if epoch == self.last_epoch else 1
        self.generation += 1
        self.item = 0
        for conn in self.conns:
            conn.send(("start", self.generation, epoch, start, self.step, self.prefetch))

    def _receive(self, worker: int) -> tuple:
        """The next message of this generation from ``worker``; a dead worker is an error naming its pid."""
        conn, process = self.conns[worker], self.processes[worker]
        while True:
            try:
                # Only the worker holds the other end (it was closed here after the fork): a dead worker is
                # end-of-file, after whatever it sent before dying.
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            if message is None:
                process.join(timeout=5)
                raise RuntimeError(f"DataLoader worker (pid {process.pid}) exited unexpectedly with exit code "
                                   f"{process.exitcode} (killed, e.g. by the OOM killer?)")
            if message[1] == self.generation:
                return message
            if message[0] == "batch":
                release_stale(message[4])  # a batch of an older generation: nobody will view its slot

    def _take(self, epoch: int, b: int) -> dict[str, Any]:
        worker = self.item % self.workers
        kind, _, got_epoch, got, payload = self._receive(worker)
        self.item += 1
        self.conns[worker].send(("credit", self.generation))
        if kind == "error":
            payload.reraise()
        if (got_epoch, got) != (epoch, b):  # never expected: the stream and the plan disagree
            raise RuntimeError(f"worker batch (epoch {got_epoch}, batch {got}), expected ({epoch}, {b})")
        packed: Packed = payload
        if self.pin_memory:
            packed.pin_memory()
        return packed.unpack()

    def epoch(self, epoch: int, start: int, count: int) -> Iterator[dict[str, Any]]:
        """Batches ``start .. start + count - 1`` of ``epoch`` as batch dicts.

        Raises:
            RuntimeError: a worker died, or another iteration of the same pool started meanwhile.
        """
        if not self.processes or self.next != (epoch, start):
            self._restart(epoch, start)
        self.iteration += 1
        iteration, self.next, self.last_epoch = self.iteration, None, epoch
        try:
            for b in range(start, start + count):
                if iteration != self.iteration:
                    raise RuntimeError("a newer iteration of this Loader started; iterate one epoch at a time")
                yield self._take(epoch, b)
        except GeneratorExit:  # the consumer left mid-epoch: the next iteration restarts the stream
            raise
        except BaseException:
            self.close()  # a failed worker cannot resume: start afresh next time
            raise
        if self.persistent and count:  # a stream ends after an empty epoch: restart after one
            self.next = (epoch + self.step, 0)
        else:
            self.close()

    def close(self) -> None:
        """Stop the workers (a later epoch starts new ones) and drop the slots they sent."""
        processes, conns, self.processes, self.conns, self.next = self.processes, self.conns, [], [], None
        for conn in conns:
            try:
                conn.send(("stop",))
            except OSError:  # the worker is gone already
                pass
            conn.close()  # a worker blocked sending a batch gets a broken pipe and exits
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():  # stuck in a read: stop it the hard way
                process.kill()
                process.join()
        forget(self.stream.token)
