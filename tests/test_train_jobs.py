"""pipelines/train.py train_jobs: (run, seed) jobs in parallel processes give the numbers of one process."""
from __future__ import annotations

import json

import pytest

import pipelines.train as train_stage
from mmdata.shards.build import shard_corpus
from mmdata.synth import write_synth

RUNS = {"lf": {"method": "late_fusion", "fields": ["feat_text", "feat_audio"], "model": {"dim": 8, "hidden": 16}},
        "mdm": {"method": "mdm", "fields": ["feat_text", "feat_audio"],
                "model": {"dim": 8, "hidden": 16, "bound": "nwj", "critic_hidden": 8},
                "samplers": {"marginal_permute": {"num_negatives": 1}}}}


@pytest.fixture
def mosi_repo(tmp_path, monkeypatch):
    """A working directory holding the shards of a tiny MOSI (the stage's relative paths), and its params."""
    write_synth("mosi", tmp_path / "raw", seed=0, train=24, valid=8, test=8)
    shard_corpus("mosi", tmp_path / "raw", tmp_path / "data" / "shards" / "mosi", reader={"variant": "aligned"})
    monkeypatch.chdir(tmp_path)
    return {"seed": 0, "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "seeds": 2, "threads": 1,
                                 "device": "cpu"},
            "experiments": {"mosi": RUNS}}


def test_parallel_jobs_equal_one_process_and_keep_their_order(mosi_repo, monkeypatch):
    jobs = [("lf", 0), ("mdm", 0), ("lf", 1), ("mdm", 1)]
    one_by_one = [train_stage.train_job(mosi_repo, "mosi", run, seed) for run, seed in jobs]
    monkeypatch.setattr(train_stage, "available_cores", lambda: 2)  # two processes here too
    parallel = train_stage.train_jobs(mosi_repo, "mosi", jobs)
    assert json.dumps(parallel) == json.dumps(one_by_one)
    assert parallel[0] != parallel[2], "seeds 0 and 1 must differ (else the comparison proves nothing)"


def test_a_job_error_reaches_the_stage(mosi_repo, monkeypatch):
    mosi_repo["experiments"]["mosi"]["lf"]["fields"] = ["feat_nothing"]
    monkeypatch.setattr(train_stage, "available_cores", lambda: 2)
    with pytest.raises(ValueError, match="feat_nothing"):
        train_stage.train_jobs(mosi_repo, "mosi", [("lf", 0), ("mdm", 0)])
