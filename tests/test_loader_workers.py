"""Persistent DataLoader workers (mmdata.shards.stream / slots): the same batches as no workers across epochs,
set_epoch, resumes, abandoned epochs and setting changes; kept batches are never overwritten; no process or
descriptor growth over epochs; close() stops the workers."""
from __future__ import annotations

import gc
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mmdata

OPTIONS = {"batch_size": 6, "seed": 3}


def _jitter(sample, rng):
    """A per-sample augmentation drawn from the loader's rng (keyed by seed, epoch and sample key)."""
    return {**sample, "feat_audio": sample["feat_audio"] + np.float32(rng.standard_normal())}


def _plain(batch: dict) -> dict:
    """A batch with tensors as numpy copies (comparable after the loader moved on)."""
    return {k: v.numpy().copy() if isinstance(v, torch.Tensor) else list(v) for k, v in batch.items()}


def _same(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert list(a) == list(b)  # same keys, same order
        for name in a:
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def _epochs(loader, epochs) -> list[list[dict]]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.append([_plain(b) for b in loader])
    return out


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_give_the_batches_of_no_workers_over_epochs(toy_split, persistent):
    """Epochs 0, 1, 2, then a jump back to 1 and a repeat of it, augmented: 2 workers == 0 workers."""
    epochs = [0, 1, 2, 1, 1]
    expected = _epochs(mmdata.load(toy_split, augment=_jitter, **OPTIONS), epochs)
    with mmdata.load(toy_split, augment=_jitter, num_workers=2, persistent_workers=persistent, **OPTIONS) as loader:
        got = _epochs(loader, epochs)
    for e, g in zip(expected, got):
        _same(e, g)


def test_kept_batches_are_not_overwritten(toy_split):
    """Batches held across the whole run keep their values (the workers' slots are reused only when free)."""
    expected = [_plain(b) for b in mmdata.load(toy_split, **OPTIONS)]
    with mmdata.load(toy_split, num_workers=2, prefetch_factor=1, **OPTIONS) as loader:
        kept = list(loader)
        loader.set_epoch(1)
        list(loader)  # a second epoch through the same workers while the first epoch's batches are held
        _same(expected, [_plain(b) for b in kept])


def test_mid_epoch_resume_and_abandoned_epochs(toy_split):
    """A state saved after 3 batches resumes with the same batches; an epoch left early restarts cleanly."""
    full = [_plain(b) for b in mmdata.load(toy_split, epoch=1, **OPTIONS)]
    with mmdata.load(toy_split, epoch=1, num_workers=2, **OPTIONS) as loader:
        iterator = iter(loader)
        for _ in range(3):
            next(iterator)
        state = loader.state_dict()
        del iterator  # left mid-epoch: the workers' prefetched batches are drained at the next iteration
        _same(full, [_plain(b) for b in loader])
    with mmdata.load(toy_split, num_workers=2, **OPTIONS) as resumed:
        resumed.load_state_dict(state)
        resumed.set_epoch(1)
        _same(full[3:], [_plain(b) for b in resumed])
        resumed.set_epoch(2)
        assert len(list(resumed)) == len(full)


def test_changed_settings_restart_the_workers(toy_split):
    """Setting a Loader attribute after its workers started takes effect (the workers are restarted)."""
    with mmdata.load(toy_split, num_workers=2, **OPTIONS) as loader:
        list(loader)
        loader.batch_size = 4
        _same([_plain(b) for b in mmdata.load(toy_split, seed=3, batch_size=4)], [_plain(b) for b in loader])


def test_one_iteration_at_a_time(toy_split):
    """A second iteration started before the first finished makes the first fail, never mix epochs."""
    with mmdata.load(toy_split, num_workers=2, **OPTIONS) as loader:
        first = iter(loader)
        next(first)
        second = iter(loader)
        next(second)
        with pytest.raises(RuntimeError, match="newer iteration"):
            next(first)


def _open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def _settle(condition) -> None:
    """Poll up to 15 s: worker teardown is asynchronous on a loaded machine."""
    deadline = time.monotonic() + 15
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to count file descriptors")
def test_no_process_or_descriptor_growth_and_close_stops_the_workers(toy_split):
    """Over 8 epochs the workers stay the same 2 processes and descriptors stay within the slots' bound;
    close() (and leaving ``with``) ends the workers and returns every descriptor."""
    _settle(lambda: not multiprocessing.active_children())
    before = _open_fds()
    loader = mmdata.load(toy_split, num_workers=2, prefetch_factor=2, **OPTIONS)
    list(loader)
    workers = {p.pid for p in multiprocessing.active_children()}
    after_first = _open_fds()
    for epoch in range(1, 8):
        loader.set_epoch(epoch)
        list(loader)
        assert {p.pid for p in multiprocessing.active_children()} == workers and len(workers) == 2
        # A worker's slot buffers arrive once each (one descriptor per buffer): at most workers x (prefetch + 2).
        assert _open_fds() <= after_first + 2 * 4
    loader.close()
    _settle(lambda: not multiprocessing.active_children() and _open_fds() <= before)
    assert multiprocessing.active_children() == [] and _open_fds() <= before
    with mmdata.load(toy_split, num_workers=2, **OPTIONS) as again:
        list(again)
    _settle(lambda: not multiprocessing.active_children() and _open_fds() <= before)
    assert multiprocessing.active_children() == [] and _open_fds() <= before


def _fail_on(sample, rng):
    """An augmentation that fails on one sample, as a bad input would."""
    if sample["__key__"].endswith("s0013"):
        raise ValueError(f"bad sample {sample['__key__']}")
    return sample


def test_a_worker_error_is_raised_in_the_main_process_and_the_loader_recovers(toy_split):
    """An error in a worker re-raises here with its type and message; the next epoch starts fresh workers."""
    with mmdata.load(toy_split, num_workers=2, shuffle=False, augment=_fail_on, **OPTIONS) as loader:
        with pytest.raises(ValueError, match="bad sample toy/train/s0013"):
            list(loader)
        loader.augment = None
        _same([_plain(b) for b in mmdata.load(toy_split, shuffle=False, **OPTIONS)], [_plain(b) for b in loader])


def test_an_epoch_without_batches_then_real_epochs(toy_split):
    """drop_last with a batch larger than the split: no batches, and the workers neither hang nor stall later."""
    with mmdata.load(toy_split, num_workers=2, batch_size=64, drop_last=True) as loader:
        assert list(loader) == [] and len(loader) == 0
        loader.set_epoch(1)
        assert list(loader) == []
        loader.batch_size, loader.drop_last = 16, False
        assert sum(len(b["__key__"]) for b in loader) == 40


def _slot_write(slots, released, batch_of):
    """Collate one batch the way a worker does (into a free slot's arena) and hand the slot straight back."""
    arena = slots.arena()
    batch = batch_of(arena.empty if arena is not None else np.empty)
    packed = slots.write(batch, arena)
    buffer = slots.buffers[packed.slot[2]]
    views = packed.views(buffer)
    released[packed.slot[2]] = packed.seq
    return batch, packed, buffer, views


def test_a_worker_collates_into_its_slot_and_falls_back_to_copying(toy_split):
    """After the first batch sized the slots, stacked arrays are written where the main process views them (no
    second copy); a batch outgrowing the slot is copied into a fresh buffer with the same values."""
    from mmdata.shards.collate import collate
    from mmdata.shards.slots import Slots
    loader = mmdata.load(toy_split, "train", batch_size=4, shuffle=False)
    features, fields = loader.shards.features, list(loader.fields)
    reader = loader._produce().reader()
    # Plain sample dicts (not the reader's batch arrays, which the direct npy path hands on): stacked by collate.
    batches = [[dict(s) for s in reader.read_batch(rows.tolist())] for rows in loader.plan()[:3]]
    batches.append(batches[0] * 3)  # 3x the batch: does not fit the slot the arena offers
    released = np.zeros(3, dtype=np.int64)
    slots = Slots(7, 0, released)
    in_place = []
    for samples in batches:
        batch, packed, buffer, views = _slot_write(slots, released, lambda empty: collate(samples, features, fields,
                                                                                            empty))
        expected = collate(samples, features, fields)
        assert set(views) == {k for k, v in expected.items() if isinstance(v, torch.Tensor)}
        for name, tensor in views.items():
            assert torch.equal(tensor, expected[name])
        in_place.append({name: batch[name].data_ptr() == buffer.data_ptr() + at
                         for name, _, _, at, _ in packed.layout})
    stacked = [name for name, spec in features.items() if name in fields and not spec.variable_axes
               and spec.dtype != "str" and spec.shape]
    assert stacked and not any(in_place[0].values())  # the first batch has no slot to go to yet
    assert all(in_place[1][name] and in_place[2][name] for name in stacked)
    assert not any(in_place[3].values())  # outgrew the slot: copied, into a fresh buffer


def test_direct_npy_fields_are_read_into_the_slot(toy_split):
    """Fixed-shape npy fields that the reader reads straight into the batch array (preadv) land in the worker's
    slot when it passes its arena: the main process views them where they were read, with no copy."""
    from mmdata.shards.slots import Slots
    loader = mmdata.load(toy_split, "train", batch_size=4, shuffle=False)
    stream = loader._produce()
    released = np.zeros(3, dtype=np.int64)
    slots = Slots(8, 0, released)
    direct = [name for name in loader.fields if name in stream.reader().layouts]
    assert direct  # the toy split has fixed-shape npy fields
    placed = []
    for rows in loader.plan()[:3]:
        batch, packed, buffer, views = _slot_write(slots, released, lambda empty: stream.batch(0, rows, empty))
        expected = stream.batch(0, rows)
        for name in direct:
            assert torch.equal(views[name], expected[name])
        placed.append({name: batch[name].data_ptr() == buffer.data_ptr() + at for name, _, _, at, _ in packed.layout})
    assert not any(placed[0].values())  # the first batch sizes the slots
    assert all(placed[1][name] and placed[2][name] for name in direct)


def _slow_in_workers(sample, rng):
    """Identity, but 10 ms per sample in a worker process: workers fall behind the main process."""
    if multiprocessing.parent_process() is not None:
        time.sleep(0.01)
    return sample


def test_the_main_process_decodes_what_slow_workers_have_not_started(toy_split, monkeypatch):
    """While the awaited batch is still in a worker, the main process decodes later batches no worker has claimed
    (here whatever their cost): every batch is delivered once, in order, equal to no workers' batches, and both
    the main process and the workers decoded some."""
    from mmdata.shards import pool
    decoded = []
    original = pool.WorkerPool._decode
    monkeypatch.setattr(pool.WorkerPool, "_decode", lambda self, e, b: decoded.append((e, b)) or original(self, e, b))
    monkeypatch.setattr(pool, "DECODE_AHEAD_S", float("inf"))
    expected = _epochs(mmdata.load(toy_split, augment=_slow_in_workers, **OPTIONS), [0, 1])
    with mmdata.load(toy_split, augment=_slow_in_workers, num_workers=2, **OPTIONS) as loader:
        got = _epochs(loader, [0, 1])
    for e, g in zip(expected, got):
        _same(e, g)
    batches = sum(len(e) for e in expected)
    assert 0 < len(decoded) < batches and len(set(decoded)) == len(decoded)


def test_claims_give_each_item_to_one_process():
    """Two processes claiming the same items at once: each item goes to exactly one; a new generation starts
    afresh."""
    from mmdata.shards.pool import Claims
    claims, items = Claims(), 3000
    won = torch.zeros(2, items, dtype=torch.bool).share_memory_()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process
        try:
            for item in range(items):
                won[1, item] = claims.claim(1, item)
        finally:
            os._exit(0)
    for item in range(items):
        won[0, item] = claims.claim(1, item)
    os.waitpid(child, 0)
    assert torch.equal(won.sum(0), torch.ones(items, dtype=torch.int64))
    assert claims.claim(2, 0) and not claims.claim(2, 0)
