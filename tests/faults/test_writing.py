"""6.10 Shard writing, disk full at every commit step (SHW-03): the ENOSPC of a shard's write is in
tests/test_outputs.py (monkeypatched and on a real small tmpfs); here the later steps: a shard's fsync at close,
the index, the manifest and the corpus record. Each ends in one DiskFullError naming the file being written,
carrying the original ENOSPC, with nothing published and no temporary folder left."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import mmdata.shards.build as build_module
import mmdata.shards.write as write_module
from mmdata.errors import DiskFullError
from mmdata.shards.build import shard_corpus
from mmdata.synth import write_synth
from tests.conftest import write_toy


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _assert_nothing_published(caught: pytest.ExceptionInfo, named: str, base: Path) -> None:
    assert named in str(caught.value) and "ENOSPC" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC
    leftovers = [p.name for p in base.rglob("*") if p.is_file()]
    assert not [n for n in leftovers if n.endswith((".tar", ".partial", ".parquet", ".json"))], leftovers
    assert not [p for p in base.rglob("*.tmp-*")]


@pytest.mark.parametrize("step, named, processes", [
    ("fsync", "toy-train-000000.tar", 1), ("fsync", ".tar", 2), ("index", "index.parquet", 1),
    ("manifest", "manifest.json", 1)])
def test_shw_03_disk_full_at_each_split_commit_step_names_the_file(tmp_path, monkeypatch, step, named, processes):
    """SHW-03: ENOSPC from the shards' fsync (in the background after close, waited for before the index; with 2
    processes the driver's or the worker's, whichever is waited for first), from writing index.parquet and from
    writing manifest.json."""
    if step == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    else:
        monkeypatch.setattr(write_module, {"index": "write_index", "manifest": "write_json_atomic"}[step], _enospc)
    with pytest.raises(DiskFullError) as caught:
        write_toy(tmp_path / "toy" / "train", n=20, max_samples=5, processes=processes)
    _assert_nothing_published(caught, named, tmp_path)
    assert not (tmp_path / "toy" / "train").exists()


def test_shw_03_disk_full_while_writing_the_corpus_record_publishes_no_split(tmp_path, monkeypatch):
    """SHW-03: every split written, then ENOSPC writing the record mmdata.json (the last file): no split of the
    corpus is published either, since the whole output is renamed into place only after the record."""
    raw = write_synth("avmnist", tmp_path / "raw" / "avmnist", train=24, test=10)
    monkeypatch.setattr(build_module, "write_corpus_record", _enospc)
    out = tmp_path / "shards" / "avmnist"
    with pytest.raises(DiskFullError) as caught:
        shard_corpus("avmnist", raw, out, progress=False)
    _assert_nothing_published(caught, "mmdata.json", tmp_path / "shards")
    assert not out.exists()
