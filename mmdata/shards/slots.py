"""Passing batches from worker processes through reused shared-memory slots (design section 5b).

torch shares every tensor of every batch through a new shared-memory segment and file descriptor; on small
batches that costs more than decoding them, and on large ones the fresh pages fault twice (worker and main).
Here a worker writes a batch's tensors into one of its slots (one shared uint8 buffer each, :data:`ALIGN`-aligned
per tensor) and sends a small message naming it; a slot's buffer travels once (again after it grows or the
stream restarts). The main process hands out views of the slot, with no copy; it releases a slot back to its
worker (a counter in shared memory) once the batch it held was delivered and no tensor viewing the slot is left
in this process, so a batch kept (``list(loader)``) is never overwritten: its worker writes elsewhere, in a fresh
buffer when all slots are held. With pinned memory the batch is copied out of the slot into pinned memory at once and the slot
released.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Byte alignment of each tensor in a slot (any dtype may view it; cache-line aligned copies).
ALIGN = 64
# How many tensors and storage objects share a slot's storage when no batch views it: the registry's tensor and
# the storage object made for the query. None when this torch lacks the count: batches are then copied out.
_BASE_USERS = 2
_use_count = getattr(torch._C, "_storage_Use_Count", None)
#: Main-process registry: (stream token, worker, slot) -> [buffer, seq delivered and not yet released (0: none)].
_SLOTS: dict[tuple[int, int, int], list] = {}
#: Main-process view of each stream's shared release counters, by stream token: int64 ``[workers, slots]``.
_RELEASED: dict[int, np.ndarray] = {}


def register(token: int, released: torch.Tensor) -> None:
    """Make a stream's shared release counters (``[workers, slots]``) known to the main process."""
    _RELEASED[token] = released.numpy()


def forget(token: int) -> None:
    """Drop the main process's references to a stream's slots (its workers stopped)."""
    _RELEASED.pop(token, None)
    for key in [key for key in _SLOTS if key[0] == token]:
        del _SLOTS[key]


def _release(token: int) -> None:
    """Hand back every delivered slot of ``token`` that no tensor in this process views any longer."""
    released = _RELEASED.get(token)
    for (t, worker, k), entry in list(_SLOTS.items()):
        buffer, seq = entry
        if t == token and seq and released is not None and _use_count is not None \
                and _use_count(buffer.untyped_storage()._cdata) <= _BASE_USERS:
            released[worker, k], entry[1] = seq, 0


def release_stale(packed: Packed) -> None:
    """Hand back the slot of a batch received but dropped (sent before a restart of the stream)."""
    released = _RELEASED.get(packed.slot[0])
    if released is not None:
        released[packed.slot[1], packed.slot[2]] = packed.seq


class Slots:
    """A worker's slots (in the worker process).

    Args:
        token, worker: the stream and worker they belong to.
        released: this worker's row of the shared release counters, int64 ``[slots]``: slot ``k`` may be
            rewritten when it equals the sequence number of the slot's last write.
    """

    def __init__(self, token: int, worker: int, released: np.ndarray) -> None:
        self.token, self.worker, self.released = token, worker, released
        count = len(released)
        self.buffers = [torch.empty(0, dtype=torch.uint8)] * count
        self.seq, self.sent, self.written = [0] * count, [False] * count, 0

    def restart(self) -> None:
        """Send every slot again: batches in flight at a restart are drained unseen, with any slot they carried."""
        self.sent = [False] * len(self.buffers)

    def _choose(self, nbytes: int) -> int:
        free = [k for k in range(len(self.buffers)) if self.released[k] == self.seq[k]]
        fits = [k for k in free if self.buffers[k].numel() >= nbytes]
        if fits or free:
            return (fits or free)[0]
        return min(range(len(self.buffers)), key=self.seq.__getitem__)  # all held: replace the oldest's buffer

    def arena(self) -> Arena | None:
        """The largest free slot as an :class:`Arena` to collate the next batch straight into, or None (all held,
        or none written yet: the first batch is copied and sizes the slots)."""
        free = [k for k in range(len(self.buffers)) if self.released[k] == self.seq[k] and self.buffers[k].numel()]
        if not free:
            return None
        k = max(free, key=lambda k: self.buffers[k].numel())
        return Arena(k, self.buffers[k])

    def write(self, batch: dict[str, Any], arena: Arena | None = None) -> Packed:
        """``batch`` written into a free slot, as the small message naming it. Tensors ``arena`` allocated (the
        batch was collated into that slot) stay where they are; the rest are copied in after them."""
        packed = Packed(batch)
        in_place = arena is not None and packed.place(arena)
        if in_place:
            k = arena.slot
        else:
            packed.place(None)
            k = self._choose(packed.nbytes)
        # Repacking into the arena's own buffer could overwrite a tensor before it is copied: take a fresh one.
        repack = arena is not None and not in_place and k == arena.slot
        if self.released[k] != self.seq[k] or self.buffers[k].numel() < packed.nbytes or repack:
            # A fresh buffer; the main process keeps the old one for as long as a batch views it.
            size = packed.nbytes + packed.nbytes // 4  # room to spare: variable-length batches vary
            self.buffers[k], self.sent[k] = torch.empty(size, dtype=torch.uint8).share_memory_(), False
        self.written += 1
        self.seq[k] = self.written
        packed.slot, packed.seq = (self.token, self.worker, k), self.written
        slot = self.buffers[k].numpy()  # numpy copies: torch's copy_ may hand small copies to its threads
        for name, _, _, at, size in packed.layout:
            if batch[name].data_ptr() != self.buffers[k].data_ptr() + at:  # not collated in place
                slot[at:at + size] = batch[name].numpy().reshape(-1).view(np.uint8)
        if not self.sent[k]:
            packed.shared, self.sent[k] = self.buffers[k], True
        return packed


class Arena:
    """Bump allocation of a batch's arrays in a free slot (``empty(shape, dtype)``, :data:`ALIGN`-aligned), so
    collate writes a worker's batch where the main process will view it: no copy into the slot afterwards.

    Args:
        slot: the slot's number; buffer: its uint8 shared buffer. An array that does not fit is a plain
            ``np.empty`` (copied in by :meth:`Slots.write`).
    """

    def __init__(self, slot: int, buffer: torch.Tensor) -> None:
        self.slot, self.buffer, self.used = slot, buffer, 0
        self.bytes = buffer.numpy()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if self.used + size > len(self.bytes):
            return np.empty(shape, dtype)
        at, self.used = self.used, self.used + -(-size // ALIGN) * ALIGN
        return self.bytes[at:at + size].view(dtype).reshape(shape)


class Packed:
    """A batch dict as sent from a worker: its tensors in a slot, the rest pickled.

    Attributes:
        layout: ``(name, dtype, shape, offset, bytes)`` per tensor; ``nbytes``: what they take in the slot.
        rest: the non-tensor values (``__key__``, str fields); ``order``: the batch's keys in order.
        slot, seq: ``(stream token, worker, slot)`` the tensors are in, and the worker's write number.
        shared: the slot's buffer when sent along; ``data``: the batch copied into pinned memory, when pinned.
    """

    def __init__(self, batch: dict[str, Any]) -> None:
        self.layout, self.rest, self.order, self.nbytes = [], {}, list(batch), 0
        self.slot, self.seq = (0, 0, 0), 0
        self.shared: torch.Tensor | None = None
        self.data: torch.Tensor | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        for name, value in batch.items():
            if isinstance(value, torch.Tensor):
                self.tensors[name] = value
            else:
                self.rest[name] = value

    def place(self, arena: Arena | None) -> bool:
        """Lay the tensors out: where ``arena`` allocated them, the others after its used part (or everything
        packed from 0 without an arena). False when that does not fit the arena's slot."""
        start = arena.buffer.data_ptr() if arena is not None else 0
        self.layout, self.nbytes = [], arena.used if arena is not None else 0
        for name, value in self.tensors.items():
            size = value.numel() * value.element_size()
            at = value.data_ptr() - start
            if arena is None or not (value.is_contiguous() and 0 <= at and at + size <= arena.used):
                at, self.nbytes = self.nbytes, self.nbytes + -(-size // ALIGN) * ALIGN
            self.layout.append((name, value.dtype, tuple(value.shape), at, size))
        return arena is not None and self.nbytes <= len(arena.bytes)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tensors": {}}  # the layout describes them; the slot carries them

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each tensor as a view of ``buffer`` (a slot, or :attr:`data`): one ``set_`` each, half the cost of
        slicing and viewing twice (offsets are :data:`ALIGN`-aligned, so whole elements of any dtype)."""
        storage = buffer.untyped_storage()
        return {name: torch.empty(0, dtype=dtype).set_(storage, at // dtype.itemsize, shape)
                for name, dtype, shape, at, _ in self.layout}

    def _arrive(self) -> torch.Tensor:
        """The slot's buffer, registered as delivered (in the main process)."""
        if self.shared is not None:
            _SLOTS[self.slot] = [self.shared, 0]
            self.shared = None
        entry = _SLOTS[self.slot]
        entry[1] = self.seq
        return entry[0]

    def _copy(self, pinned: bool) -> None:
        buffer = self._arrive()
        self.data = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=pinned)
        np.copyto(self.data.numpy(), buffer[:self.nbytes].numpy())

    def pin_memory(self) -> Packed:
        """Copy out of the slot into pinned memory; the slot is released."""
        self._copy(pinned=True)
        _release(self.slot[0])
        return self

    def unpack(self) -> dict[str, Any]:
        """The batch dict: tensors view the slot (or the pinned copy); keys in the original order."""
        if self.data is None:  # not pinned (pin_memory copied it out and released the slot)
            if _use_count is None:
                self._copy(pinned=False)
            _release(self.slot[0])  # earlier batches no longer viewed (before this one's views exist)
        views = self.views(self.data if self.data is not None else self._arrive())
        values = {**self.rest, **views}
        return {name: values[name] for name in self.order}
