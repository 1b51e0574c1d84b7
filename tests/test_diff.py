"""``mmdata diff``: samples added, removed and changed by key, manifest changes, exit codes, ``--exact``, Views;
and one DVC-tracked output at two git revisions (``--rev``, a throwaway git + DVC repo from tests/dvcrepo.py)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from mmdata.cli import main
from mmdata.corpora.base import Skip
from mmdata.shards.build import shard_corpus
from mmdata.shards.diff import diff
from mmdata.shards.revision import diff_revisions
from mmdata.shards.index import read_index
from mmdata.synth import SYNTHS
from mmdata.shards.write import write_split
from tests import dvcrepo
from tests.conftest import TOY_FEATURES, toy_samples


def _write(directory: Path, samples: list, features=None, **kwargs) -> Path:
    """Write toy ``samples`` (and skips) as split ``train`` of corpus ``toy`` under ``directory``."""
    size = kwargs.pop("max_samples", 4)  # recorded as params the way shard_corpus records them
    write_split(samples, features or TOY_FEATURES, directory / "train", corpus="toy", split="train",
                max_samples=size, max_skip_fraction=0.5, params={"max_samples": size}, **kwargs)
    return directory / "train"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return _write(tmp_path / "old", toy_samples(12))


def test_identical_outputs_exit_0_with_empty_lists(capsys, tmp_path, base):
    again = _write(tmp_path / "again", toy_samples(12))
    status, out, _ = _cli(capsys, "diff", base, again, "--json", "--exact")
    result = json.loads(out)
    assert status == 0 and result["identical"]
    assert set(result) >= {"added", "removed", "changed", "splits", "classes", "schema", "params", "source", "skips"}
    assert result["added"] == result["removed"] == result["changed"] == []
    assert result["classes"] == result["schema"] == result["params"] == result["skips"] == {}
    assert result["splits"]["train"]["exact_checked"] == 12
    status, out, _ = _cli(capsys, "diff", tmp_path / "old", tmp_path / "again")  # corpus-level folders too
    assert status == 0 and "identical" in out.splitlines()[0]


def test_added_removed_changed_keys_and_class_counts(capsys, tmp_path, base):
    samples = toy_samples(13)
    extra = samples.pop()  # s0012, label 0 ("a")
    samples = [s for s in samples if s["__key__"] != "toy/train/s0002"] + [extra]  # drop s0002 (label "c")
    samples[4]["image"] = samples[4]["image"] ^ np.uint8(1)  # s0005: a pixel value
    samples[6]["label"] = np.int64(2)  # s0007: "b" -> "c"
    new = _write(tmp_path / "new", samples)
    for exact in (False, True):  # --exact agrees with the default on real changes
        result = diff(base, new, exact=exact)
        assert result["added"] == ["train/toy/train/s0012"]
        assert result["removed"] == ["train/toy/train/s0002"]
        assert result["changed"] == ["train/toy/train/s0005", "train/toy/train/s0007"]
        assert result["splits"]["train"]["changed_fields"] == {"train/toy/train/s0005": ["image"],
                                                               "train/toy/train/s0007": ["label"]}
    assert result["classes"] == {"train": {"class_counts.a": {"old": 4, "new": 5},
                                           "class_counts.b": {"old": 4, "new": 3}}}
    assert result["schema"] == result["params"] == {} and not result["identical"]
    status, out, _ = _cli(capsys, "diff", base, new, "--limit", "1")
    assert status == 1
    assert out.splitlines()[1] == "samples: +1 added, -1 removed, ~2 changed"
    assert "  train/toy/train/s0005  (image)" in out and "train/toy/train/s0007" not in out
    assert "  ... and 1 more (--limit)" in out and "classes train: class_counts.a: 4 -> 5" in out


def test_params_schema_and_skip_changes(tmp_path, base):
    resized = _write(tmp_path / "sizes", toy_samples(12), max_samples=5)
    result = diff(base, resized)
    assert result["params"] == {"train": {"max_samples": {"old": 4, "new": 5}}}
    assert result["added"] == result["removed"] == result["changed"] == [] and not result["identical"]
    assert result["splits"]["train"]["shards"] == {"old": 3, "new": 3}
    features = dict(TOY_FEATURES, text=dataclasses.replace(TOY_FEATURES["text"], description="a caption"))
    result = diff(base, _write(tmp_path / "schema", toy_samples(12), features=features))
    assert result["schema"] == {"train": {"features.text.description": {"old": "", "new": "a caption"}}}
    assert result["changed"] == []  # the same payloads
    skipped = toy_samples(12)[:11] + [Skip("toy/train/s0011", "raw.npy:11", "non_finite", "NaN in feat_audio")]
    result = diff(base, _write(tmp_path / "skips", skipped))
    skips = result["skips"]["train"]
    assert result["removed"] == ["train/toy/train/s0011"]
    assert skips["skipped_by_reason"] == {"non_finite": {"old": 0, "new": 1}}
    assert skips["keys_added"] == ["toy/train/s0011"] and skips["keys_removed"] == []
    assert skips["counts"]["skipped"] == {"old": 0, "new": 1} and skips["counts"]["raw"] == {"old": 12, "new": 12}


def _crc_twin(data: bytes) -> bytes:
    """``data`` with bits of its first 5 bytes flipped so that zlib.crc32 is unchanged (crc32 is affine over
    GF(2): flips D change it by crc(D) ^ crc(0...), independent of what precedes; 40 bits, 32 equations)."""
    zero = zlib.crc32(bytes(len(data)))
    basis: dict[int, tuple[int, int]] = {}  # pivot bit -> (crc delta, flip mask)
    for bit in range(40):
        flip = bytearray(len(data))
        flip[bit // 8] = 1 << (bit % 8)
        delta, mask = zlib.crc32(bytes(flip)) ^ zero, 1 << bit
        while delta and delta.bit_length() in basis:
            other, other_mask = basis[delta.bit_length()]
            delta, mask = delta ^ other, mask ^ other_mask
        if not delta:  # a non-empty set of flips that leaves crc32 as it was
            twin = bytearray(data)
            for b in range(40):
                if mask >> b & 1:
                    twin[b // 8] ^= 1 << (b % 8)
            return bytes(twin)
        basis[delta.bit_length()] = (delta, mask)
    raise AssertionError("40 bits always hold a dependency")


def test_exact_catches_a_payload_change_that_keeps_crc32(tmp_path, base):
    samples = toy_samples(12)
    image = samples[3]["image"]
    twin = np.frombuffer(_crc_twin(image.tobytes()), dtype=np.uint8).reshape(image.shape)
    assert zlib.crc32(twin.tobytes()) == zlib.crc32(image.tobytes()) and (twin != image).any()
    samples[3]["image"] = twin
    forged = _write(tmp_path / "forged", samples)
    old_index, new_index = read_index(base.parent / "train" / "index.parquet"), read_index(forged / "index.parquet")
    assert old_index["crc32_image"][3] == new_index["crc32_image"][3]  # the npy header precedes the same tail
    assert diff(base, forged)["changed"] == []  # crc32 identity misses it (the documented 2^-32)
    result = diff(base, forged, exact=True)
    assert result["changed"] == ["train/toy/train/s0003"] and not result["identical"]
    assert result["splits"]["train"]["changed_fields"] == {"train/toy/train/s0003": ["image"]}


def test_bad_path_exits_2_naming_it(capsys, tmp_path, base):
    status, _, err = _cli(capsys, "diff", tmp_path / "missing", base)
    assert status == 2 and "missing" in err and "OLD" in err
    (tmp_path / "empty").mkdir()
    status, _, err = _cli(capsys, "diff", base, tmp_path / "empty")
    assert status == 2 and "empty" in err and "NEW" in err


def test_view_split_compares_rows(tmp_path):
    """SNLI-VE stores one image per sample and expands one row per hypothesis (keys ``<sample>/<row id>``)."""
    root = SYNTHS["snli_ve"](tmp_path / "raw", seed=0, train=6, valid=2, test=4, no_gold=0.0)
    outs = {}
    for name, options in (("a", {}), ("b", {}), ("small", {"image_size": 32})):
        shard_corpus("snli_ve", root, tmp_path / name, reader=options, max_samples=3, progress=False)
        outs[name] = tmp_path / name
    assert diff(outs["a"], outs["b"], exact=True)["identical"]
    result = diff(outs["a"], outs["small"])
    rows = read_index(outs["a"] / "test" / "index.parquet")["key"]
    assert all("/" in k.split("snli_ve/test/", 1)[1] for k in rows)
    assert [k for k in result["changed"] if k.startswith("test/")] == sorted(f"test/{k}" for k in rows)
    assert result["params"]["test"] == {"reader.image_size": {"old": None, "new": 32}}
    assert "features.image.shape" in result["schema"]["test"] and result["source"]["release"]
    lines = (root / "snli_ve_test.jsonl").read_text().splitlines(keepends=True)
    (root / "snli_ve_test.jsonl").write_text("".join(lines[:-1]))
    shard_corpus("snli_ve", root, tmp_path / "dropped", max_samples=3, progress=False)
    result = diff(outs["a"], tmp_path / "dropped")
    gone = set(rows) - set(read_index(tmp_path / "dropped" / "test" / "index.parquet")["key"])
    assert len(gone) == 1 and result["removed"] == [f"test/{next(iter(gone))}"] and result["added"] == []
    sample = next(iter(gone)).rsplit("/", 1)[0]
    assert all(k.startswith(f"test/{sample}/") for k in result["changed"])  # its image's other rows
    assert result["source"]["sha256_changed"] == ["snli_ve_test.jsonl"]


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict[str, Path]:
    """A git + DVC repo with two commits of data/shards/avmnist (v2: more train rows, 25 samples per shard) and a
    folder copy of each version's shards."""
    root = tmp_path_factory.mktemp("versions")
    repo = dvcrepo.init(root / "repo")
    copies = {}
    for name, options in (("v1", {}), ("v2", {"train": 60, "max_samples": 25})):
        dvcrepo.version(repo, name, **options)
        copies[name] = shutil.copytree(repo / dvcrepo.SHARDS, root / name)
    return {"repo": repo, **copies}


def _head(repo: Path) -> str:
    return dvcrepo.run(repo, "git", "rev-parse", "HEAD").stdout.strip()


@pytest.mark.slow
def test_git_revisions_through_dvc_equal_the_folder_diff(capsys, versions):
    repo, head = versions["repo"], _head(versions["repo"])
    expected = diff(versions["v1"], versions["v2"])
    result = diff_revisions(dvcrepo.SHARDS, "HEAD~1", "HEAD", repo=repo)
    revisions = result.pop("revisions")
    assert result == expected
    assert revisions["path"] == dvcrepo.SHARDS and revisions["new"] == {"rev": "HEAD", "commit": head}
    assert len(revisions["old"]["commit"]) == 40 and revisions["old"]["commit"] != head
    assert result["params"]["train"] == {"max_samples": {"old": 20, "new": 25}}
    assert result["splits"]["train"]["samples"] == {"old": 44, "new": 55} and result["splits"]["train"]["added"] == 11
    assert result["splits"]["test"]["added"] == result["splits"]["test"]["changed"] == 0  # test rows unchanged
    exact = diff_revisions(dvcrepo.SHARDS, "HEAD~1", repo=repo, exact=True)  # NEW: the workspace (v2)
    assert exact.pop("revisions")["new"] == {"rev": "workspace", "commit": None}
    assert exact == diff(versions["v1"], versions["v2"], exact=True)
    status, out, _ = _cli(capsys, "diff", "avmnist", "--rev", "HEAD~1", "--repo", repo, "--json")  # a corpus name
    assert status == 1 and {k: v for k, v in json.loads(out).items() if k != "revisions"} == expected
    status, out, _ = _cli(capsys, "diff", dvcrepo.SHARDS, "--rev", "HEAD~1", "--rev", "HEAD~1", "--repo", repo)
    assert status == 0 and out.splitlines()[0].endswith(f"{dvcrepo.SHARDS}@HEAD~1: identical")
    assert dvcrepo.run(repo, "git", "status", "--porcelain").stdout == "" and _head(repo) == head
    assert dvcrepo.tree_bytes(repo / dvcrepo.SHARDS) == dvcrepo.tree_bytes(versions["v2"])  # workspace untouched


@pytest.mark.slow
def test_revision_errors_exit_2_naming_them(capsys, tmp_path, versions):
    repo = versions["repo"]
    for extra, named in ((["--rev", "no-such-rev"], "unknown git revision 'no-such-rev'"),
                         (["--rev", "HEAD"] * 3, "at most two --rev"),
                         (["other/folder", "--rev", "HEAD"], "drop the second folder 'other/folder'")):
        status, _, err = _cli(capsys, "diff", dvcrepo.SHARDS, *extra, "--repo", repo)
        assert status == 2 and named in err
    status, _, err = _cli(capsys, "diff", "data/shards/mosi", "--rev", "HEAD", "--repo", repo)
    assert status == 2 and "data/shards/mosi at HEAD" in err and "no such folder" in err
    status, _, err = _cli(capsys, "diff", dvcrepo.SHARDS, "--rev", "HEAD", "--repo", tmp_path)
    assert status == 2 and "not inside a DVC repository" in err
    clone = shutil.copytree(repo, tmp_path / "clone", symlinks=True)
    shutil.rmtree(clone / ".dvc" / "cache")  # no cache and no remote: the old revision's files are nowhere
    status, _, err = _cli(capsys, "diff", dvcrepo.SHARDS, "--rev", "HEAD~1", "--repo", clone)
    assert status == 2 and f"{dvcrepo.SHARDS} at HEAD~1" in err and "dvc push" in err
