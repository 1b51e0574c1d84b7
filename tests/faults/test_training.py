"""6.14 Training integration: a killed DataLoader worker surfaces, and damage to any shard fails every rank
at open rather than leaving one rank short."""
from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path

import pytest

import mmdata
from mmdata.errors import ShardIntegrityError
from mmdata.shards.plan import plan_rank
from tests.conftest import write_toy


def _die_in_a_worker(sample, rng, main: int, flag: Path):
    """An augmenter that dies like an OOM-killed worker on the first sample a worker reaches. The main process
    also decodes batches no worker has started (mmdata.shards.pool): there it never dies (that would kill the
    test run) but waits until a worker has reached this point, so a worker is killed however slow the machine."""
    if os.getpid() != main:
        flag.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
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


def test_trn_04_a_killed_worker_is_an_error_naming_it_not_a_stall(toy_split, tmp_path, alarm):
    """TRN-04: SIGKILL in a worker (as the OOM killer does) ends the epoch with an error naming the worker's
    pid, within the timeout."""
    augment = functools.partial(_die_in_a_worker, main=os.getpid(), flag=tmp_path / "a-worker-died")
    loader = mmdata.load(toy_split, batch_size=4, num_workers=2, shuffle=False, augment=augment)
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


def test_trn_07_the_train_stage_refuses_shards_that_differ_from_those_written(tmp_path, monkeypatch, capsys):
    """TRN-07: a train shard altered after it was written, size and mtime kept (invisible to DVC's cached
    hashes), fails ``python -m pipelines.train`` at startup naming the shard, before any model is written:
    the stage opens each split with ``verify=True``."""
    import yaml

    from mmdata.errors import EXIT_ERROR, run_guarded
    from pipelines import shard as shard_stage
    from pipelines import synth as synth_stage
    from pipelines import train as train_stage
    from tests.test_config_errors import GOOD

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(GOOD))
    assert run_guarded("synth", lambda: synth_stage.main(["avmnist"])) == 0
    assert run_guarded("shard", lambda: shard_stage.main(["avmnist"])) == 0
    shard = sorted((tmp_path / "data" / "shards" / "avmnist" / "train").glob("*.tar"))[0]
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    capsys.readouterr()
    assert run_guarded("stage train@avmnist", lambda: train_stage.main(["avmnist"])) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "ShardIntegrityError" in err and shard.name in err and "sha256" in err
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("model.pt"))
