"""Shard versions through a DVC remote (README "Versions: DVC remotes"): the real ``dvc`` command line.

``dvc push`` to a local-directory remote and to an S3 remote (moto's server on 127.0.0.1); with the DVC cache and
the workspace shards deleted, ``dvc pull`` restores them byte for byte and ``mmdata verify`` accepts them; after a
params change and a new commit, ``git checkout HEAD~1 && dvc checkout`` restores the first version's shards
exactly, and so does ``dvc pull`` of that revision from the remote alone; ``mmdata diff --rev`` reads both
revisions from the remote when the cache is gone.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import dvcrepo
from tests.dvcrepo import SHARDS, run, tree_bytes
from tests.s3server import s3, s3_endpoint  # noqa: F401

pytestmark = pytest.mark.slow


def _forget(repo: Path) -> None:
    """Delete the DVC cache and the workspace shards (what a fresh clone lacks)."""
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / SHARDS)


def _restored(repo: Path, expected: dict[str, bytes]) -> None:
    """The workspace shards equal ``expected`` byte for byte, and ``mmdata verify`` accepts them."""
    assert tree_bytes(repo / SHARDS) == expected
    done = run(repo, "mmdata", "verify", SHARDS, "--source", "data/raw/avmnist")  # exit 0, else run raises
    assert sorted(done.stdout.splitlines()) == ["ok test", "ok train", "ok valid"]


def _round_trip(repo: Path) -> None:
    """Push, forget, pull; a second version; old and new revisions restored from cache and from the remote."""
    first = dvcrepo.version(repo, "v1: train 48, 20 samples per shard")
    run(repo, "dvc", "push", "-q")
    _forget(repo)
    run(repo, "dvc", "pull", "-q")
    _restored(repo, first)
    second = dvcrepo.version(repo, "v2: train 60, 25 samples per shard", train=60, max_samples=25)
    assert second != first
    run(repo, "dvc", "push", "-q")
    run(repo, "git", "checkout", "-q", "HEAD~1")
    run(repo, "dvc", "checkout", "-q")
    _restored(repo, first)
    _forget(repo)  # the first version again, from the remote alone
    run(repo, "dvc", "pull", "-q")
    _restored(repo, first)
    shutil.rmtree(repo / ".dvc" / "cache")
    done = run(repo, "mmdata", "diff", SHARDS, "--rev", "HEAD", "--rev", "main", "--json", check=False)
    assert done.returncode == 1, done.stderr  # both sides read through DVC from the remote: they differ
    result = json.loads(done.stdout)
    assert result["params"]["train"] == {"max_samples": {"old": 20, "new": 25}}
    assert result["splits"]["train"]["samples"] == {"old": 44, "new": 55}
    assert tree_bytes(repo / SHARDS) == first  # diff left the workspace as it was


def test_local_remote_push_pull_checkout(tmp_path):
    repo = dvcrepo.init(tmp_path / "repo")
    run(repo, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    _round_trip(repo)
    assert any((tmp_path / "remote").rglob("*"))


def test_s3_remote_push_pull_checkout(tmp_path, s3):  # noqa: F811 (the fixture)
    pytest.importorskip("dvc_s3", reason="dvc-s3 is in the s3 extra (make test installs it)")
    repo = dvcrepo.init(tmp_path / "repo")
    run(repo, "dvc", "remote", "add", "-d", "store", s3.url("dvcstore"))
    run(repo, "dvc", "remote", "modify", "store", "endpointurl", s3.endpoint)
    _round_trip(repo)
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="dvcstore/")
    assert listed["KeyCount"] > 0
