"""DDP training under torchrun on CPU (gloo): 2 ranks x 2 loader workers (methods/distributed.py,
methods/loop.py, pipelines/train.py).

One real ``torchrun`` of :mod:`tests.ddp_worker` (module fixture ``ranks``) trains a linear model on two toy
splits and the train stage's jobs on a tiny MOSI; the tests read what each rank saw and wrote:

- every row is delivered once per epoch over the ranks, plus exactly the padding the loaders count;
- both ranks take the same number of steps (also with 7 shards of unequal sizes over 2 ranks, which must not
  hang: the subprocess has a timeout) and end with identical weights;
- the DDP result equals ONE process at the same global batch (8) up to reduction order. Why they match: with
  ``partition="sample"`` rank ``r`` reads rows ``r::2`` of the global order ``make_rng(seed, "samples",
  epoch).permutation(rows)``, so with 4 rows per rank the ranks' batch ``b`` together are rows ``8b .. 8b+7``
  of that order, exactly one process's batch ``b`` at batch size 8 under the same partition (world size 1).
  The loss is a batch mean and the model has no dropout or batch statistics, so DDP's average of the two
  half-batch gradients is the full batch's gradient; AdamW then takes the same steps;
- only rank 0 writes checkpoints, histories and curves; a global batch the ranks do not divide fails with a
  ConfigError naming the setting; MDM (whose critic takes its own optimiser steps inside the model step, their
  gradients averaged by hand) trains on both ranks to identical weights, critic included;
- ``python -m pipelines.train <corpus>`` with ``train.nproc: 2`` launches torchrun itself (the DVC stage's
  command, so ``dvc exp run -S train.nproc=2`` trains with DDP).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from mmdata.errors import ConfigError
from mmdata.shards.build import shard_corpus
from mmdata.synth import write_synth
from pipelines.train import relaunch
from tests.conftest import toy_samples, write_toy
from tests.ddp_worker import GLOBAL_BATCH, RUNS, toy_fit

REPO = Path(__file__).resolve().parents[1]
#: Rows of the toy splits (see tests/ddp_worker.py): 8 shards of 5 rows; 6 of 5 rows and one of 3.
ROWS = {"even": 40, "uneven": 33}
TIMEOUT = 240  # seconds: a hang (unequal steps) fails the test instead of blocking CI


def mosi_params(nproc: int) -> dict:
    """The train stage's params for a tiny MOSI run (one seed, two epochs)."""
    runs = {"lf": {"method": "late_fusion", "fields": ["feat_text", "feat_audio"], "model": {"dim": 8, "hidden": 16}}}
    return {"seed": 0, "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "seeds": 1, "threads": 1, "device": "cpu",
                                 "nproc": nproc},
            "corpora": {"mosi": {"root": "data/raw/mosi"}}, "experiments": {"mosi": runs}}


def mosi_repo(directory: Path, shards: Path, nproc: int) -> Path:
    """A working directory for the train stage: params.yaml and data/shards/mosi (a link to ``shards``)."""
    (directory / "data" / "shards").mkdir(parents=True)
    (directory / "data" / "shards" / "mosi").symlink_to(shards)
    (directory / "params.yaml").write_text(yaml.safe_dump(mosi_params(nproc)))
    return directory


@pytest.fixture(scope="module")
def mosi_shards(tmp_path_factory) -> Path:
    """Shards of a tiny MOSI (24 train rows)."""
    root = tmp_path_factory.mktemp("mosi")
    write_synth("mosi", root / "raw", seed=0, train=24, valid=8, test=8)
    shard_corpus("mosi", root / "raw", root / "shards", reader={"variant": "aligned"})
    return root / "shards"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``command`` in ``cwd`` with this checkout importable, one torch thread, and a timeout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, mosi_shards) -> Path:
    """OUT of one ``torchrun --nproc_per_node 2 -m tests.ddp_worker OUT`` (what each rank saw and wrote)."""
    out = tmp_path_factory.mktemp("ddp")
    for name, rows in ROWS.items():
        write_toy(out / name, n=rows, max_samples=5)
    for rank in (0, 1):
        mosi_repo(out / f"repo{rank}", mosi_shards, nproc=2)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "tests.ddp_worker", str(out)], cwd=REPO)
    return out


def _record(out: Path, rank: int, name: str) -> dict:
    return json.loads((out / f"rank{rank}_{name}.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_row_once_per_epoch_plus_the_counted_padding(ranks, name):
    records = [_record(ranks, r, name) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in records)
    keys = {s["__key__"] for s in toy_samples(ROWS[name])}
    for epoch in range(RUNS[name][1]):
        seen = Counter(k for r in records for k in r["seen"][str(epoch)])
        padded = sum(r["padded"][str(epoch)] for r in records)
        assert set(seen) == keys, f"epoch {epoch}: rows missing or foreign"
        assert sum(seen.values()) == len(keys) + padded  # the only repeats are the counted padding
    if name == "uneven":
        assert any(r["padded"]["0"] for r in records), "unequal shards must be equalised by padding"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_equal_steps_and_identical_weights_on_both_ranks(ranks, name):
    steps = [_record(ranks, r, name)["steps"] for r in (0, 1)]
    assert steps[0] == steps[1] > 0
    weights = [torch.load(ranks / f"rank{r}_{name}.pt", weights_only=True) for r in (0, 1)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.slow
def test_two_ranks_equal_one_process_at_the_same_global_batch(ranks):
    partition, epochs = RUNS["even"]
    model, record = toy_fit(ranks / "even", partition=partition, epochs=epochs, batch_size=GLOBAL_BATCH,
                            num_workers=0, rank=0, world_size=1)
    ddp = torch.load(ranks / "rank0_even.pt", weights_only=True)
    one = model.state_dict()
    assert record["steps"] == _record(ranks, 0, "even")["steps"]
    assert max(float((ddp[k] - one[k]).abs().max()) for k in one) < 1e-5
    torch.manual_seed(0)
    start = torch.nn.Linear(64, 3)  # the comparison must not pass because nothing trained
    assert max(float((ddp[k] - start.state_dict()[k]).abs().max()) for k in one) > 1e-2


@pytest.mark.slow
def test_ddp_refuses_what_it_cannot_train(ranks):
    refused = json.loads((ranks / "rank1_refused.json").read_text())
    assert "batch_size" in refused["batch_7"] and "2 ranks" in refused["batch_7"]
    assert refused["batch_8"] is None


@pytest.mark.slow
def test_mdm_critic_steps_train_to_identical_weights_on_both_ranks(ranks):
    runs = [torch.load(ranks / f"rank{r}_mdm.pt", weights_only=True) for r in (0, 1)]
    critic = [key for key in runs[0]["final"] if key.startswith("critic.")]
    assert critic
    for key, value in runs[0]["final"].items():
        assert torch.equal(value, runs[1]["final"][key]), key
    for part in ("critic.", "base."):  # the critic's own steps and the model step both moved the weights
        assert any(not torch.equal(runs[0]["initial"][k], runs[0]["final"][k]) for k in runs[0]["final"]
                   if k.startswith(part)), part


@pytest.mark.slow
def test_only_rank_zero_writes_outputs(ranks):
    written = ranks / "repo0" / "results"
    assert (written / "models" / "mosi" / "lf" / "seed0.pt").is_file()
    assert (written / "curves" / "mosi" / "lf.csv").is_file()
    history = json.loads((written / "history" / "mosi.json").read_text())
    assert len(history["lf"]["0"]["train_loss"]) == 2
    assert not (ranks / "repo1" / "results").exists()


def test_train_nproc_decides_the_torchrun_launch(monkeypatch):
    for key in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert relaunch(mosi_params(1), "mosi") == 0
    assert relaunch(mosi_params(2), "mosi") == 2
    monkeypatch.setenv("LOCAL_RANK", "0")  # a torchrun worker trains, it does not launch torchrun again
    assert relaunch(mosi_params(2), "mosi") == 0
    params = mosi_params(0)
    with pytest.raises(ConfigError, match="train.nproc"):
        relaunch(params, "mosi")
    params = mosi_params(1)
    params["experiments"]["mosi"]["lf"]["train"] = {"nproc": 2}
    with pytest.raises(ConfigError, match="nproc"):
        relaunch(params, "mosi")


@pytest.mark.slow
def test_stage_with_nproc_2_launches_torchrun(tmp_path, mosi_shards):
    repo = mosi_repo(tmp_path / "repo", mosi_shards, nproc=2)
    result = run([sys.executable, "-m", "pipelines.train", "mosi"], cwd=repo)
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m pipelines.train mosi" in result.stdout
    history = json.loads((repo / "results" / "history" / "mosi.json").read_text())
    assert len(history["lf"]["0"]["train_loss"]) == 2
    checkpoint = torch.load(repo / "results" / "models" / "mosi" / "lf" / "seed0.pt", weights_only=True)
    assert checkpoint["meta"]["experiment"] == "mosi.lf"
    assert not list(repo.rglob("*.tmp"))
