"""Persistent worker processes that run a rank's :class:`~mmdata.shards.stream.EpochStream` (design section 5b).

Each worker gets a pipe. The main process sends it ``start`` (generation, epoch, batch, epoch step); the worker
then produces its share of the stream (items ``w, w + W, ...``: whole batches, epoch after epoch) as long as it
holds credits, writing each batch into a shared-memory slot (:mod:`mmdata.shards.slots`) and sending a small
message with its (epoch, batch) tag. The main process reads item ``i`` from worker ``i % W``, checks the tag and
returns a credit, so at most ``prefetch_factor`` batches per worker are ahead. Each item is claimed
(:class:`Claims`) by whoever starts it first: a worker before it decodes it, or the main process when the item it
needs next has neither arrived nor been started by its worker. The main process then decodes it itself instead
of waiting: a batch cheaper to decode than to hand over (and any batch a busy worker has not reached yet) is not
waited for, so workers add to what the main process would read alone, and the batches are the same whoever
decodes them. A later iteration that continues where the stream stands (the next epoch, as a training loop's
``set_epoch`` asks, or the same epoch again when it was repeated) takes the batches already prefetched; anything
else sends a new ``start`` with a new generation, and messages of older generations are dropped on arrival
(their slots handed back).

Compared with a torch DataLoader this has no index queue, no feeder threads and no per-epoch worker restart;
what DataLoader gives is kept: worker errors re-raise in the main process (``ExceptionWrapper``), a worker
that dies (OOM killer) is an error naming its pid, never a hang; workers run torch on one thread and ignore
Ctrl-C (the main process gets it).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import select
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from torch._utils import ExceptionWrapper

from mmdata.shards.orphans import end_with_parent
from mmdata.shards.slots import Packed, Slots, forget, register, release_stale
from mmdata.shards.stream import EpochStream, pin

_TOKENS = itertools.count()  # tells apart the slots of pools alive at once in one process
#: The main process decodes batches ahead of its turn, while the awaited one is still in a worker, only when a
#: batch takes less than this to decode: it then delays the awaited batch by at most this much, and handing a
#: batch over (about 0.1-0.3 ms of CPU on both sides, measured on 2 cores) is a large part of its cost.
DECODE_AHEAD_S = 1e-3
#: Workers run this much nicer than the main process: where processes outnumber free cores, the consumer (which
#: also decodes, and in training drives the model) keeps its core; on 2 cores, 2 workers on batches of 0.2 ms
#: read 0.60x (nice 0) and 0.80x (nice 10) of what the main process reads alone (stocks, batch 32).
WORKER_NICE = 10


class Claims:
    """Who decodes each item of a generation: the first of its worker and the main process to claim it.

    A ring of :attr:`RING` int64 entries in shared memory; item ``i`` of generation ``g`` is claimed when entry
    ``i % RING`` holds ``g << 32 | i + 1``. A worker runs at most its credits ahead of the main process, far fewer
    than :attr:`RING` items, so an entry is never needed by two live items. A lock makes check-and-set atomic
    across processes (uncontended: a futex in user space).
    """

    RING = 4096

    def __init__(self) -> None:
        self.table = torch.zeros(self.RING, dtype=torch.int64).share_memory_()
        self.lock = multiprocessing.get_context().Lock()
        self.entries: memoryview | None = None  # the table as int64 memory, made per process on first use

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "entries": None}

    def claim(self, generation: int, item: int) -> bool:
        """Claim ``item`` of ``generation``; False when another process has it (about 1 us, uncontended)."""
        if self.entries is None:
            self.entries = memoryview(self.table.numpy()).cast("B").cast("q")
        tag, at, entries, lock = generation << 32 | item + 1, item % self.RING, self.entries, self.lock
        lock.acquire()
        try:
            if entries[at] == tag:
                return False
            entries[at] = tag
            return True
        finally:
            lock.release()


def _produce(stream: EpochStream, slots: Slots, conn: Connection, worker: int, workers: int,
             start: tuple) -> tuple | None:
    """Run one generation of the stream until a new command arrives (returned) or the stream ends (None)."""
    _, generation, epoch, batch, step, credits = start
    slots.restart()
    waiting = select.poll()  # registered once: Connection.poll builds a selector per call
    waiting.register(conn.fileno(), select.POLLIN)
    for item, e, b, rows in stream.worker_items(worker, workers, epoch, batch, step):
        while credits == 0 or waiting.poll(0):
            message = conn.recv()  # blocks while the main process holds all our batches
            if message[0] != "credit":
                return message
            credits += message[1] == generation
        if not stream.claims.claim(generation, item):
            continue  # the main process decoded it: no batch, no credit spent
        try:
            began = time.perf_counter()
            arena = slots.arena()  # collate straight into a free slot: no second copy of the batch
            batch = stream.batch(e, rows, arena.empty if arena is not None else np.empty)
            packed = slots.write(batch, arena)
            message = ("batch", generation, e, b, packed, time.perf_counter() - began)
            if packed.shared is None:  # plain pickle: ForkingPickler's per-call set-up costs more than the message
                conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
            else:  # a slot's buffer travels as a file descriptor: ForkingPickler's reduction
                conn.send(message)
        except Exception:  # noqa: BLE001 - any error in a batch is the main process's to raise
            conn.send(("error", generation, e, b, ExceptionWrapper(where=f"in DataLoader worker {worker}")))
            return None
        credits -= 1
    return None


def _work(stream: EpochStream, conn: Connection, worker: int, workers: int, parent: int,
          parent_ends: list[Connection]) -> None:
    """A worker process: follow ``start`` commands until ``stop`` or the main process goes away."""
    # No kill with the parent: a persistent worker may outlive the thread that started it (mmdata.shards.orphans).
    end_with_parent(parent, parent_ends, kill=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)  # two workers on two cores: intra-op threads would only contend
    os.nice(WORKER_NICE)
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
        self.arrived: list[Any] = []  # per worker, a poll object on its pipe (registered once)
        self.plan: list[np.ndarray] = []  # the current epoch's batches (index rows), for those decoded here
        self.decoded: dict[int, Any] = {}  # items decoded here ahead of their turn (a batch, or its error)
        self.cost = float("inf")  # seconds the last batch took to decode (here or in a worker): none yet
        self.next: tuple[int, int] | None = None  # (epoch, batch) the stream stands at, when known
        self.last_epoch: int | None = None
        self.step = self.generation = self.iteration = self.item = 0
        stream.token = next(_TOKENS)

    def _start_workers(self) -> None:
        # Slots per worker: its batches in flight, the one it writes and the one the consumer holds.
        self.stream.released = torch.zeros(self.workers, self.prefetch + 2, dtype=torch.int64).share_memory_()
        self.stream.claims = Claims()
        register(self.stream.token, self.stream.released)
        context = multiprocessing.get_context()
        for worker in range(self.workers):
            ours, theirs = context.Pipe()
            # Forked, a worker inherits the main process's ends of every pipe so far: it closes them (end of file
            # then tells it the main process is gone). Spawned, it inherits none.
            parent_ends = [*self.conns, ours] if context.get_start_method() == "fork" else []
            process = context.Process(target=_work, args=(self.stream, theirs, worker, self.workers, os.getpid(),
                                                          parent_ends), daemon=True)
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(ours)
            self.arrived.append(select.poll())
            self.arrived[-1].register(ours.fileno(), select.POLLIN)

    def _restart(self, epoch: int, start: int) -> None:
        if not self.processes:
            self._start_workers()
        # Guess what follows this epoch: the same epoch again when it was repeated (an evaluation loader
        # without set_epoch), else the next one (a training loop's set_epoch(e + 1)).
        self.step = 0 if epoch == self.last_epoch else 1
        self.generation += 1
        self.item, self.decoded = 0, {}
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

    def _decode(self, epoch: int, b: int) -> dict[str, Any]:
        """Batch ``b`` of ``epoch`` decoded in this process (an item no worker had started); its cost is noted."""
        began = time.perf_counter()
        batch = self.stream.batch(epoch, self.plan[b])
        self.cost = time.perf_counter() - began
        return pin(batch) if self.pin_memory else batch

    def _take(self, epoch: int, b: int, end: int) -> dict[str, Any]:
        """Batch ``b`` of ``epoch`` (item :attr:`item`): decoded here earlier, or arrived from its worker, or -
        while it has not arrived - decoded here if its worker has not started it. While its worker is still on it,
        batches cheaper than :data:`DECODE_AHEAD_S` that no worker has started (up to ``end``, and at most the
        workers' prefetch) are decoded here meanwhile."""
        worker, item = self.item % self.workers, self.item
        self.item += 1
        if item in self.decoded:
            batch = self.decoded.pop(item)
            if isinstance(batch, Exception):
                raise batch
            return batch
        ahead, limit = 0, min(end - b, self.workers * self.prefetch + 1)
        while ahead < limit and not self.arrived[worker].poll(0):
            if self.stream.claims.claim(self.generation, item + ahead):
                if not ahead:
                    return self._decode(epoch, b)
                try:
                    self.decoded[item + ahead] = self._decode(epoch, b + ahead)
                except Exception as exc:  # noqa: BLE001 - raised at that batch's turn, as a worker's error is
                    self.decoded[item + ahead] = exc
            elif self.cost > DECODE_AHEAD_S:
                break  # a costly batch here could delay the awaited one by more than it would save
            ahead += 1
        kind, _, got_epoch, got, payload, *cost = self._receive(worker)
        self.conns[worker].send(("credit", self.generation))
        if kind == "error":
            payload.reraise()
        if (got_epoch, got) != (epoch, b):  # never expected: the stream and the plan disagree
            raise RuntimeError(f"worker batch (epoch {got_epoch}, batch {got}), expected ({epoch}, {b})")
        self.cost = cost[0]
        packed: Packed = payload
        if self.pin_memory:
            packed.pin_memory()
        return packed.unpack()

    def epoch(self, epoch: int, batches: list[np.ndarray], start: int) -> Iterator[dict[str, Any]]:
        """Batches ``start ..`` of ``epoch`` as batch dicts; ``batches``: the epoch's plan (index rows per batch,
        what the workers compute themselves), for the batches decoded in this process.

        Raises:
            RuntimeError: a worker died, or another iteration of the same pool started meanwhile.
        """
        if not self.processes or self.next != (epoch, start):
            self._restart(epoch, start)
        self.iteration += 1
        iteration, self.next, self.last_epoch = self.iteration, None, epoch
        self.plan, count = batches, len(batches) - start
        try:
            for b in range(start, start + count):
                if iteration != self.iteration:
                    raise RuntimeError("a newer iteration of this Loader started; iterate one epoch at a time")
                yield self._take(epoch, b, start + count)
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
        self.arrived, self.plan, self.decoded = [], [], {}
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
