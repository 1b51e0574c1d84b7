"""Untrusted input: pickles that would run code are refused unread, and file names read out of data files never
lead a reader outside the corpus root (``..``, absolute paths, symlinks out are ``outside_root`` skips)."""
from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from mmdata.modalities import safe_pickle
from mmdata.cli import main
from mmdata.corpora.base import inside_root
from mmdata.errors import FileError, UnsafeInputError
from mmdata.shards.build import shard_corpus
from mmdata.synth import hateful_memes, mmimdb, snli_ve, sunrgbd


class _Payload:
    """Unpickling this object calls ``call(*args)``: what a crafted release would do."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(target: Path) -> dict[str, _Payload]:
    """Payloads that each create ``target`` when they run (a shell command, a file opened for writing)."""
    return {"system": _Payload(os.system, f"touch {target}"), "open": _Payload(builtins.open, str(target), "w")}


def _release_with(payload: _Payload) -> dict:
    """A MulT-shaped release whose train split hides ``payload`` after some genuine arrays."""
    train = {"id": np.array([[b"v", b"1", b"0"]]), "text": np.zeros((1, 50, 300), np.float32), "audio": payload}
    return {"train": train, "valid": {}, "test": {}}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("kind", ["system", "open"])
def test_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, kind, protocol):
    target = tmp_path / "written-by-payload"
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps(_release_with(_payloads(target)[kind]), protocol=protocol))
    with pytest.raises(UnsafeInputError) as caught:
        safe_pickle.load(path)
    callable_name = {"system": f"{os.system.__module__}.system", "open": f"{builtins.open.__module__}.open"}[kind]
    assert str(path) in str(caught.value) and callable_name in str(caught.value)
    assert not target.exists()


def test_shard_command_refuses_a_malicious_mosi_pickle(tmp_path, capsys):
    target, raw, out = tmp_path / "written-by-payload", tmp_path / "raw", tmp_path / "shards"
    raw.mkdir()
    (raw / "mosi_data.pkl").write_bytes(pickle.dumps(_release_with(_payloads(target)["system"]), protocol=4))
    status = main(["shard", "mosi", "--root", str(raw), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert status != 0
    assert len(err.splitlines()) == 1 and "mosi_data.pkl" in err and "system" in err, err
    assert not target.exists()
    assert not out.exists() or not list(out.rglob("manifest.json"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_pickles_load_as_pickle_loads_them(protocol):
    # The value types the MMSA / MulT / MultiBench releases hold, in every protocol a tool may have written.
    value = {"train": {"raw_text": np.array(["a clip", "é"], dtype=object), "id": np.array([[b"v", b"1"]]),
                       "audio": np.full((2, 3, 5), -np.inf, np.float32), "regression_labels": np.float64(1.5),
                       "lengths": np.arange(2), "kinds": {"a", "b"}, "raw": b"\x00\xff", "z": 1 + 2j}}
    got = safe_pickle.loads(pickle.dumps(value, protocol=protocol))
    for name, expected in value["train"].items():
        assert np.array_equal(np.asarray(got["train"][name]), np.asarray(expected)), name


# --- paths read out of data files ------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["../outside.jpg", "img/../../outside.jpg", "/etc/passwd", "img\\..\\..\\x",
                                      "C:/x.jpg"])
def test_inside_root_refuses_names_that_climb_out(tmp_path, relative):
    with pytest.raises(FileError) as caught:
        inside_root(tmp_path / "root", relative)
    assert caught.value.reason == "outside_root"


def test_inside_root_follows_symlinks_but_allows_a_symlinked_root(tmp_path):
    (tmp_path / "real" / "img").mkdir(parents=True)
    (tmp_path / "real" / "img" / "a.png").write_bytes(b"a")
    (tmp_path / "outside.png").write_bytes(b"o")
    (tmp_path / "real" / "img" / "in.png").symlink_to("a.png")
    (tmp_path / "real" / "img" / "out.png").symlink_to(tmp_path / "outside.png")
    (tmp_path / "root").symlink_to(tmp_path / "real")  # the user's own symlink to the corpus
    assert inside_root(tmp_path / "root", "img/a.png") == tmp_path / "root" / "img" / "a.png"
    assert inside_root(tmp_path / "root", "img", "in.png").is_file()
    with pytest.raises(FileError, match="symlink") as caught:
        inside_root(tmp_path / "root", "img", "out.png")
    assert caught.value.reason == "outside_root"


def _outside_image(tmp_path: Path, source: Path, suffix: str) -> Path:
    """A readable copy of a corpus image beside (not inside) the root: were it read, the sample would pass."""
    outside = tmp_path / f"outside{suffix}"
    shutil.copyfile(source, outside)
    return outside


def _symlink_out(path: Path, outside: Path) -> None:
    path.unlink()
    path.symlink_to(outside)


def _assert_outside_root(manifest: dict, raw: int) -> None:
    report = manifest["report"]
    assert report["skipped_by_reason"] == {"outside_root": 3}
    assert report["raw"] == raw == report["written"] + report["skipped"]
    assert all(s["source"] and s["detail"] for s in report["skips"])


def test_hateful_memes_img_paths_stay_inside_the_root(tmp_path):
    root = hateful_memes.generate(tmp_path / "hm", seed=0, train=12, valid=4, test=4, unseen=4)
    path = root / "train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    outside = _outside_image(tmp_path, root / records[0]["img"], ".png")
    records[0]["img"] = "../outside.png"  # relative to the folder of the JSONL files, as the release's "img/..."
    records[1]["img"] = str(outside)
    _symlink_out(root / records[2]["img"], outside)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    manifests = shard_corpus("hateful_memes", root, tmp_path / "out", max_skip_fraction=0.5, progress=False)
    _assert_outside_root(manifests["train"], raw=len(records))


def test_mmimdb_split_ids_stay_inside_the_root(tmp_path):
    root = mmimdb.generate(tmp_path / "raw", seed=0, train=10, valid=3, test=3)
    base = root / "mmimdb" if (root / "mmimdb").is_dir() else root
    split = json.loads((base / "split.json").read_text())
    ids = split["train"]
    for ext in ("json", "jpeg"):
        _outside_image(tmp_path, base / "dataset" / f"{ids[0]}.{ext}", f".{ext}")
    _symlink_out(base / "dataset" / f"{ids[2]}.jpeg", tmp_path / "outside.jpeg")  # the JSON is fine, the poster not
    ids[0], ids[1] = "../../outside", str(tmp_path / "outside")
    (base / "split.json").write_text(json.dumps(split))
    manifests = shard_corpus("mmimdb", root, tmp_path / "out", max_skip_fraction=0.5, progress=False)
    _assert_outside_root(manifests["train"], raw=10)


def test_snli_ve_image_ids_stay_inside_the_root(tmp_path):
    root = snli_ve.generate(tmp_path / "ve", seed=0, train=8, valid=3, test=3, no_gold=0.0)
    path = root / "snli_ve_train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    key = "Flikr30kID" if "Flikr30kID" in records[0] else "Flickr30K_ID"
    suffix = ".jpg" if key == "Flikr30kID" else ""
    image = lambda r: root / "flickr30k_images" / (str(r[key]).removesuffix(".jpg") + ".jpg")
    outside = _outside_image(tmp_path, image(records[0]), ".jpg")
    _symlink_out(image(records[0]), outside)  # every pair of that image goes with it
    others = [r for r in records if image(r) != image(records[0])]
    others[0][key], others[1][key] = "../outside" + suffix, str(tmp_path / "outside") + suffix
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    images = len({str(r[key]) for r in records})
    manifests = shard_corpus("snli_ve", root, tmp_path / "out", max_skip_fraction=0.6, progress=False)
    _assert_outside_root(manifests["train"], raw=images)


def test_sunrgbd_split_entries_stay_inside_the_root(tmp_path):
    root = sunrgbd.generate(tmp_path / "raw", seed=0, train=10, test=2)
    split_file = root / "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat"
    cells = loadmat(split_file, squeeze_me=True)
    train = [str(entry) for entry in np.atleast_1d(cells["alltrain"])]
    scene = root / "SUNRGBD" / sunrgbd.scene_name(2)
    shutil.copytree(scene, tmp_path / "outside_scene")
    shutil.rmtree(scene)
    scene.symlink_to(tmp_path / "outside_scene")  # a complete scene: it would read fine if followed
    prefix = "/n/fs/sun3d/data/SUNRGBD/"
    train[0] = prefix + "../../outside_scene"
    train[1] = prefix + str(tmp_path / "outside_scene")  # the remainder after SUNRGBD/ is absolute
    cell = lambda names: np.array(names, dtype=object).reshape(1, -1)
    savemat(split_file, {"alltrain": cell(train), "alltest": cell(list(np.atleast_1d(cells["alltest"])))})
    options = {"num_points": 256, "min_points": 64, "max_boxes": 8}
    manifests = shard_corpus("sunrgbd", root, tmp_path / "out", reader=options, max_skip_fraction=0.5,
                             progress=False)
    _assert_outside_root(manifests["train"], raw=9)
