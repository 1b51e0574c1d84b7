"""The ``mmdata`` command line: synth, shard, inspect, verify, preview and its error messages."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmdata.cli import main
from mmdata.corpora import CORPORA
from mmdata.shards.manifest import MANIFEST, read_manifest
from mmdata.shards.record import RECORD
from mmdata.synth import SYNTHS

#: The real on-disk layout each synthetic corpus must reproduce (corpora.md).
LAYOUT = {
    "avmnist": ["image/train_data.npy", "image/test_data.npy", "audio/train_data.npy", "audio/test_data.npy",
                "train_labels.npy", "test_labels.npy"],
    "mosi": ["MOSI/Processed/aligned_50.pkl", "MOSI/Processed/unaligned_50.pkl", "mosi_data.pkl",
             "mosi_data_noalign.pkl"],
}
#: Tiny synthetic sizes (generator keywords) and the raw rows each split then has.
TINY = {"avmnist": {"train": 24, "test": 10}, "mosi": {"train": 6, "valid": 3, "test": 3}}
RAW_ROWS = {"avmnist": {"train": 22, "valid": 2, "test": 10}, "mosi": {"train": 6, "valid": 3, "test": 3}}
MAX_SAMPLES = 4


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run ``mmdata argv`` in-process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """corpus -> shard directory written by ``mmdata shard`` from a tiny synthetic corpus."""
    base = tmp_path_factory.mktemp("cli")
    dirs = {}
    for name in TINY:  # the CLI is corpus-independent; each corpus's own tests cover its layout
        root = SYNTHS[name](base / "raw" / name, seed=0, **TINY[name])
        dirs[name] = base / "shards" / name
        assert main(["shard", name, "--root", str(root), "--out", str(dirs[name]),
                     "--max-samples", str(MAX_SAMPLES)]) == 0
    return dirs


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_synth_writes_real_layout_and_seed_changes_bytes(capsys, tmp_path, name):
    assert set(LAYOUT) <= set(SYNTHS)
    digests = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        status, stdout, _ = cli(capsys, "synth", name, "--out", out, "--seed", seed)
        assert status == 0 and str(out) in stdout
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert written == sorted(LAYOUT[name])
        assert CORPORA[name].describe(out)  # the reader recognises the layout
        digests[seed] = {f: _digest(out / f) for f in LAYOUT[name]}
        if name == "mosi":  # ~140 MB of pickles; only the digests are needed
            shutil.rmtree(out)
    assert all(digests[0][f] != digests[1][f] for f in LAYOUT[name])


def test_synth_default_seed_is_deterministic(capsys, tmp_path):
    assert cli(capsys, "synth", "avmnist", "--out", tmp_path / "a")[0] == 0
    assert cli(capsys, "synth", "avmnist", "--out", tmp_path / "b", "--seed", "0")[0] == 0
    assert all(_digest(tmp_path / "a" / f) == _digest(tmp_path / "b" / f) for f in LAYOUT["avmnist"])


@pytest.mark.parametrize("name", sorted(TINY))
def test_shard_writes_every_split_and_counts_reconcile(sharded, name):
    corpus = CORPORA[name]
    assert sorted(p.name for p in sharded[name].iterdir()) == sorted([*corpus.splits, RECORD])
    for split in corpus.splits:
        assert (sharded[name] / split / MANIFEST).is_file()
        manifest = read_manifest(sharded[name] / split)
        report = manifest["report"]
        assert manifest["corpus"] == name and manifest["split"] == split
        assert report["raw"] == RAW_ROWS[name][split] == report["written"] + report["skipped"]
        assert manifest["samples"] == report["written"] == sum(s["samples"] for s in manifest["shards"])
        assert len(manifest["shards"]) == -(-manifest["samples"] // MAX_SAMPLES)
        assert sorted(p.name for p in (sharded[name] / split).glob("*.tar")) == \
            sorted(s["name"] for s in manifest["shards"])


def test_shard_prints_reconciliation_per_split(capsys, tmp_path):
    root = SYNTHS["avmnist"](tmp_path / "raw", seed=3, **TINY["avmnist"])
    status, out, _ = cli(capsys, "shard", "avmnist", "--root", root, "--out", tmp_path / "shards")
    assert status == 0
    for split, n in RAW_ROWS["avmnist"].items():
        assert f"avmnist/{split}: raw {n} = written {n} + skipped 0" in out


@pytest.mark.parametrize("name", sorted(TINY))
def test_inspect_text_and_json(capsys, sharded, name):
    status, out, _ = cli(capsys, "inspect", sharded[name])
    assert status == 0
    for split in CORPORA[name].splits:
        manifest = read_manifest(sharded[name] / split)
        assert f"{name}/{split}: {manifest['samples']} samples in {len(manifest['shards'])} shards" in out
        assert all(f"  {field}: " in out for field in manifest["features"])

    status, out, _ = cli(capsys, "inspect", sharded[name], "--json")
    assert status == 0
    summaries = json.loads(out)
    assert [s["split"] for s in summaries] == sorted(CORPORA[name].splits)
    for s in summaries:
        manifest = read_manifest(sharded[name] / s["split"])
        assert s["corpus"] == name
        assert s["samples"] == manifest["samples"] == RAW_ROWS[name][s["split"]]
        assert s["shards"] == len(manifest["shards"])
        assert s["bytes"] == sum(r["bytes"] for r in manifest["shards"])
        assert set(s["fields"]) == set(manifest["features"]) == set(CORPORA[name].features(
            sharded[name].parents[1] / "raw" / name))


def test_inspect_of_a_single_split_dir(capsys, sharded):
    status, out, _ = cli(capsys, "inspect", sharded["mosi"] / "valid", "--json")
    assert status == 0 and [s["split"] for s in json.loads(out)] == ["valid"]


def test_verify_passes_then_names_the_truncated_shard(capsys, sharded, tmp_path):
    status, out, _ = cli(capsys, "verify", sharded["avmnist"])
    assert status == 0
    assert sorted(line.split()[1] for line in out.splitlines()) == sorted(CORPORA["avmnist"].splits)
    assert all(line.startswith("ok ") for line in out.splitlines())

    copy = tmp_path / "avmnist"
    shutil.copytree(sharded["avmnist"], copy)
    victim = sorted((copy / "train").glob("*.tar"))[1]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    status, out, _ = cli(capsys, "verify", copy)
    assert status != 0
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith("FAIL train:") and victim.name in fails[0]
    assert "ok test" in out and "ok valid" in out


def test_verify_names_a_corrupted_shard_of_the_same_size(capsys, sharded, tmp_path):
    copy = tmp_path / "mosi"
    shutil.copytree(sharded["mosi"], copy)
    victim = sorted((copy / "test").glob("*.tar"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    status, out, _ = cli(capsys, "verify", copy)
    assert status == 1 and victim.name in out and "sha256" in out


@pytest.mark.parametrize("name", sorted(TINY))
def test_preview_writes_a_png_contact_sheet(capsys, sharded, tmp_path, name):
    import cv2

    out = tmp_path / "sheet" / f"{name}.png"
    status, stdout, _ = cli(capsys, "preview", sharded[name], "--out", out, "--count", "3")
    assert status == 0 and str(out) in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    image = cv2.imread(str(out))
    columns = len(read_manifest(sharded[name] / "train")["features"])
    # One row per sample and one column per field: figsize (2.2 * fields, 1.9 * rows) inches at 90 dpi.
    assert image.shape[2] == 3
    assert abs(image.shape[1] - 2.2 * columns * 90) <= 2 and abs(image.shape[0] - 1.9 * 3 * 90) <= 2
    assert image.std() > 10  # drawn, not blank


def test_preview_of_another_split_and_default_count(capsys, sharded, tmp_path):
    import cv2

    out = tmp_path / "test.png"
    assert cli(capsys, "preview", sharded["avmnist"], "--out", out, "--split", "test")[0] == 0
    rows = min(8, RAW_ROWS["avmnist"]["test"])
    assert abs(cv2.imread(str(out)).shape[0] - 1.9 * rows * 90) <= 2


# --- errors: a clean message naming the fix and a non-zero status, never a traceback ---


def test_unknown_corpus_names_the_known_ones(capsys, tmp_path):
    for argv in (["synth", "nope", "--out", tmp_path / "x"],
                 ["shard", "nope", "--root", tmp_path, "--out", tmp_path / "y"]):
        status, out, err = cli(capsys, *argv)
        assert status != 0
        assert "'nope'" in err and all(name in err for name in CORPORA)
        assert "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_missing_root_tells_how_to_create_it(capsys, tmp_path):
    missing = tmp_path / "not_there"
    status, _, err = cli(capsys, "shard", "avmnist", "--root", missing, "--out", tmp_path / "s")
    assert status != 0
    assert str(missing) in err and f"mmdata synth avmnist --out {missing}" in err
    assert not (tmp_path / "s").exists()


def test_unknown_reader_option_names_the_valid_ones(capsys, sharded, tmp_path):
    root = sharded["mosi"].parents[1] / "raw" / "mosi"
    status, _, err = cli(capsys, "shard", "mosi", "--root", root, "--out", tmp_path / "s", "--option", "foo=1")
    assert status != 0
    assert "'foo'" in err and all(o in err for o in CORPORA["mosi"].options())
    status, _, err = cli(capsys, "shard", "mosi", "--root", root, "--out", tmp_path / "s",
                         "--option", "release=bogus")
    assert status != 0 and "bogus" in err and "mmsa" in err
    status, _, err = cli(capsys, "shard", "mosi", "--root", root, "--out", tmp_path / "s", "--option", "release")
    assert status != 0 and "KEY=VALUE" in err
    assert not (tmp_path / "s").exists()


def test_inspect_and_verify_of_a_non_shard_dir_fail_cleanly(capsys, tmp_path):
    for command in ("inspect", "verify"):
        status, _, err = cli(capsys, command, tmp_path)
        assert status != 0 and MANIFEST in err and "Traceback" not in err
    status, _, err = cli(capsys, "preview", tmp_path, "--out", tmp_path / "p.png")
    assert status != 0 and "mmdata shard" in err and not (tmp_path / "p.png").exists()


def test_console_script(sharded, tmp_path):
    script = Path(sys.executable).with_name("mmdata")
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "mmdata.cli"]
    helped = subprocess.run([*exe, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert all(c in helped.stdout for c in ("synth", "shard", "inspect", "verify", "preview"))

    copy = tmp_path / "mosi"
    shutil.copytree(sharded["mosi"], copy)
    victim = sorted((copy / "train").glob("*.tar"))[-1]
    victim.write_bytes(victim.read_bytes()[:100])
    verified = subprocess.run([*exe, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 1 and victim.name in verified.stdout
    assert any(line.startswith("ok ") for line in verified.stdout.splitlines())


@pytest.mark.parametrize("name, old, new", [("crema_d", "frame_size", "image_size"), ("nyuv2", "size", "image_size"),
                                            ("sunrgbd", "depth_dir", "depth_source")])
def test_shard_option_with_a_renamed_key_names_the_new_one(capsys, tmp_path, name, old, new):
    status, _, err = cli(capsys, "shard", name, "--root", tmp_path / "raw", "--out", tmp_path / "out",
                         "--option", f"{old}=32")
    assert status == 2 and f"'{old}' is now '{new}'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
