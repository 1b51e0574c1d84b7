"""6.14 Training integration: a killed DataLoader worker surfaces, and damage to any shard fails every rank
at open rather than leaving one rank short."""
from __future__ import annotations

import os
import signal

import pytest

import mmdata
from mmdata.errors import ShardIntegrityError
from mmdata.shards.read import plan_rank
from tests.conftest import write_toy

VICTIM = "toy/train/s0013"


def _kill_self_on_victim(sample, rng):
    """An augmenter that dies like an OOM-killed worker when it reaches one sample."""
    if sample["__key__"] == VICTIM:
        os.kill(os.getpid(), signal.SIGKILL)
    return sample


@pytest.fixture
def alarm():
    """Fail instead of hanging: a stalled DataLoader would otherwise block the test run."""
    def timeout(signum, frame):
        raise TimeoutError("the loader stalled")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_trn_04_a_killed_worker_is_an_error_naming_it_not_a_stall(toy_split, alarm):
    """TRN-04: SIGKILL in a worker (as the OOM killer does) ends the epoch with an error naming the worker's
    pid, within the timeout."""
    loader = mmdata.load(toy_split, batch_size=4, num_workers=2, shuffle=False, augment=_kill_self_on_victim)
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid"):
        list(loader)


def test_trn_05_a_damaged_shard_of_another_rank_fails_every_rank_at_open(tmp_path):
    """TRN-05 (partly): opening a split checks every shard's size (and with ``verify=True`` its sha256), not
    just the rank's own, so all ranks fail together before training; a flip found only when a payload is read
    fails that rank alone (crc32 at read)."""
    split = tmp_path / "toy" / "train"
    write_toy(split, n=40, max_samples=5)
    loader = mmdata.load(split, world_size=2, rank=0)
    names = [s["name"] for s in loader.shards.manifest["shards"]]
    plan = plan_rank(loader.shards.shard_rows, batch_size=5, world_size=2, rank=1, shuffle=False)
    rows = {int(r) for batch in plan.batches for r in batch}
    theirs = next(n for i, n in enumerate(names) if set(loader.shards.shard_rows[i].tolist()) <= rows)
    path = split / theirs
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01  # same size: only a hash sees it at open
    path.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=theirs):
        mmdata.load(split, world_size=2, rank=0, verify=True)
    path.write_bytes(bytes(data[: len(data) // 2]))
    for rank in (0, 1):
        with pytest.raises(ShardIntegrityError, match=theirs):
            mmdata.load(split, world_size=2, rank=rank)
