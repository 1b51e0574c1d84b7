"""6.15 DVC: a stage that wrote a partial output exits non-zero, and raw data is a dep of the stage that
reads it."""
from __future__ import annotations

from pathlib import Path

import yaml

import mmdata.shards.write as write_module
from mmdata.errors import EXIT_ERROR, run_guarded
from pipelines import shard as shard_stage
from pipelines import synth as synth_stage
from tests.test_config_errors import GOOD

REPO = Path(__file__).resolve().parents[2]


def test_dvc_01_the_shard_stage_exits_nonzero_when_its_output_does_not_reconcile(tmp_path, monkeypatch, capsys):
    """DVC-01: if a shard re-read disagrees with what was written, ``python -m pipelines.shard`` exits with
    EXIT_ERROR and publishes nothing, so DVC never records the partial output as the stage's result."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(GOOD))
    assert run_guarded("stage synth@avmnist", lambda: synth_stage.main(["avmnist"])) == 0
    real = write_module.shard_keys
    monkeypatch.setattr(write_module, "shard_keys", lambda path: real(path)[:-1])
    assert run_guarded("stage shard@avmnist", lambda: shard_stage.main(["avmnist"])) == EXIT_ERROR
    assert "reconciliation failed" in capsys.readouterr().err
    assert not list((tmp_path / "data").rglob("manifest.json"))


def test_dvc_07_every_shard_stage_depends_on_the_raw_root_it_reads():
    """DVC-07: raw files edited in place change the hash of the shard stage's ``corpora.<name>.root`` dep, so
    ``dvc status`` reports it and ``dvc repro`` re-runs (and the synth stage declares that root as its out)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    shard, synth = dvc["stages"]["shard"], dvc["stages"]["synth"]
    assert shard["foreach"] == synth["foreach"] == "${corpora}"
    assert "${item.root}" in shard["do"]["deps"] and "corpora.${key}.root" in shard["do"]["params"]
    assert synth["do"]["outs"] == ["data/raw/${key}"]
    assert all(block["root"] == f"data/raw/{name}" for name, block in params["corpora"].items())
