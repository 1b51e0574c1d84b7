"""NYUv2: the mini's .mat layout (v7.3 header, reversed axes, 1-based splits, mappings), the reader's splits,
keys, schema and normals, the signal only depth or colour carries, and bad input with counts reconciled."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from scipy.io.matlab import matfile_version

from mmdata.corpora import nyuv2
from mmdata.corpora.base import Skip
from mmdata.corpora.check import check_sample
from mmdata.modalities.depth import NYU_RGB, decode_normals, estimate_normals
from mmdata.errors import ConfigError
from mmdata.shards.build import shard_corpus
from mmdata.synth.nyuv2 import CLASSES, LABELED, MAP13, MAP40, NAMES40, SPLITS, generate

TRAIN, TEST, H, W = 10, 5, 30, 40
FILES = (LABELED, SPLITS, MAP40, MAP13)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("nyuv2") / "nyuv2", seed=0, train=TRAIN, test=TEST, height=H, width=W)


def _copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


def _read(root: Path, split: str, **options: object) -> tuple[list[dict], list[Skip]]:
    items = list(nyuv2.iter_samples(root, split, **options))
    return [i for i in items if not isinstance(i, Skip)], [i for i in items if isinstance(i, Skip)]


def _clean(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}


def test_labeled_file_is_v73_hdf5_with_matlab_header_and_reversed_axes(root):
    raw = (root / LABELED).read_bytes()
    assert raw[:19] == b"MATLAB 7.3 MAT-file" and raw[124:128] == b"\x00\x02IM"
    assert matfile_version(str(root / LABELED)) == (2, 0)
    assert all(matfile_version(str(root / name)) == (1, 0) for name in (SPLITS, MAP40, MAP13))
    with h5py.File(root / LABELED, "r") as f:
        assert f.userblock_size == 512
        n = TRAIN + TEST
        assert f["images"].shape == (n, 3, W, H) and f["images"].dtype == np.uint8
        assert f["depths"].shape == f["rawDepths"].shape == (n, W, H) and f["depths"].dtype == np.float32
        assert f["labels"].shape == (n, W, H) and f["labels"].dtype == np.uint16
        assert f["names"].shape == (1, 894) and f["scenes"].shape == (1, n)
        assert f["labels"].attrs["MATLAB_class"] == b"uint16"
        assert set(np.unique(f["labels"][:])) <= {0} | {i for i, _ in CLASSES.values()}


def test_splits_are_1_based_and_mappings_have_the_real_shapes(root):
    splits = scipy.io.loadmat(root / SPLITS)
    both = np.concatenate([splits["trainNdxs"].ravel(), splits["testNdxs"].ravel()])
    assert splits["trainNdxs"].shape == (TRAIN, 1) and sorted(both) == list(range(1, TRAIN + TEST + 1))
    mapping = scipy.io.loadmat(root / MAP40)
    assert mapping["mapClass"].shape == (1, 894) and mapping["className"].shape == (1, 40)
    assert nyuv2.class_names(root) == NAMES40
    assert all(mapping["mapClass"][0, i - 1] == c for i, c in CLASSES.values())
    struct = scipy.io.loadmat(root / MAP13)["classMapping13"]
    assert struct["labels13"][0, 0].shape == (1, 40) and struct["classNames"][0, 0].shape == (1, 13)


def test_generate_is_deterministic(tmp_path, root):
    same = generate(tmp_path / "same", seed=0, train=TRAIN, test=TEST, height=H, width=W)
    other = generate(tmp_path / "other", seed=1, train=TRAIN, test=TEST, height=H, width=W)
    for name in FILES:
        assert (same / name).read_bytes() == (root / name).read_bytes(), name
    assert (other / LABELED).read_bytes() != (root / LABELED).read_bytes()


def test_reader_splits_keys_schema(root):
    features = nyuv2.features(root)
    assert features["image"].shape == (H, W, 3) and features["depth"].dtype == "uint16"
    assert features["label"].classes[0] == "void" and len(features["label"].classes) == 41
    read = {split: _read(root, split) for split in nyuv2.CORPUS.splits}
    n_valid = math.ceil(TRAIN * 0.1)
    assert {s: len(samples) for s, (samples, _) in read.items()} == {"train": TRAIN - n_valid, "valid": n_valid,
                                                                      "test": TEST}
    train_ids = scipy.io.loadmat(root / SPLITS)["trainNdxs"].ravel().astype(int)
    assert [s["__key__"] for s in read["train"][0]] == [f"nyuv2/train/{i:04d}" for i in train_ids[:-n_valid]]
    for samples, skips in read.values():
        assert not skips
        for sample in samples:
            check_sample(_clean(sample), features)
    assert "train 9 + valid 1" in nyuv2.describe(root)


def test_frames_are_transposed_back_and_labels_mapped(root):
    sample = _read(root, "test")[0][0]
    index = int(sample["__key__"].rsplit("/", 1)[1]) - 1
    with h5py.File(root / LABELED, "r") as f:
        image, depth, labels = f["images"][index], f["depths"][index], f["labels"][index]
    r, c = 7, 23  # pixel (row r, column c) is [:, c, r] in the reversed layout
    assert sample["image"][r, c].tolist() == image[:, c, r].tolist()
    assert sample["depth"][r, c] == round(float(depth[c, r]) * 1000)
    lookup = {i894: i40 for i894, i40 in CLASSES.values()} | {0: 0}
    assert sample["label"][r, c] == lookup[int(labels[c, r])]
    np.testing.assert_array_equal(sample["label"], np.vectorize(lookup.get)(labels.T))


def test_stored_normals_are_the_open3d_normals_of_the_stored_depth(root):
    sample = _read(root, "valid")[0][0]
    expected = estimate_normals(sample["depth"] / 1000.0, NYU_RGB)
    angle = np.degrees(np.arccos(np.clip((decode_normals(sample["normal"]) * expected).sum(-1)
                                         / np.linalg.norm(decode_normals(sample["normal"]), axis=-1), -1, 1)))
    assert angle.max() < 1.0  # only the 8-bit quantisation differs


def test_signal_box_only_depth_separates_picture_window_door_only_colour(root):
    samples = [s for split in ("train", "test") for s in _read(root, split)[0]]
    gaps, colours = {"box": [], "picture": [], "window": []}, {"box": [], "picture": []}
    ids = {name: i40 for name, (_, i40) in CLASSES.items()}
    v, u = np.mgrid[0:H, 0:W]
    design = np.stack([u.ravel(), v.ravel(), np.ones(H * W)], axis=1)
    for s in samples:
        # 1 / depth of a plane is linear in the pixel coordinates: fit the wall, compare the objects with it.
        wall = (s["label"] == ids["wall"]).ravel()
        coef = np.linalg.lstsq(design[wall], 1.0 / s["depth"].ravel()[wall], rcond=None)[0]
        behind = (1.0 / (design @ coef)).reshape(H, W) - s["depth"]  # mm in front of the wall plane
        for name in gaps:
            mask = s["label"] == ids[name]
            if mask.any():
                gaps[name].append(np.median(behind[mask]))
                if name in colours:
                    colours[name].append(s["image"][mask].std(axis=1).mean())  # saturation proxy
    assert min(gaps["box"]) > 300  # boxes stand >= 0.5 m in front of the wall (mm) ...
    assert max(abs(g) for g in gaps["picture"] + gaps["window"]) < 50  # ... pictures and windows are flush
    assert abs(np.mean(colours["box"]) - np.mean(colours["picture"])) < 0.5 * np.mean(colours["picture"])


def _corrupt_frames(root: Path) -> dict[str, int]:
    """Damage four test frames in place; returns which frame (0-based) got which damage."""
    test = scipy.io.loadmat(root / SPLITS)["testNdxs"].ravel().astype(int) - 1
    damage = {"zeros": test[0], "nan": test[1], "label": test[2], "some_nan": test[3]}
    with h5py.File(root / LABELED, "r+") as f:
        f["depths"][damage["zeros"]] = 0.0
        f["depths"][damage["nan"]] = np.nan
        labels = f["labels"][damage["label"]]
        labels[0, 0] = 900
        f["labels"][damage["label"]] = labels
        depth = f["depths"][damage["some_nan"]]
        depth[:3, :3] = np.nan
        f["depths"][damage["some_nan"]] = depth
    return damage


def test_bad_frames_are_named_skips_and_counts_reconcile(tmp_path, root):
    bad = _copy(root, tmp_path / "bad")
    damage = _corrupt_frames(bad)
    samples, skips = _read(bad, "test")
    by_key = {s.key.rsplit("/", 1)[1]: s.reason for s in skips}
    assert by_key == {f"{damage['zeros'] + 1:04d}": "invalid_depth", f"{damage['nan'] + 1:04d}": "invalid_depth",
                      f"{damage['label'] + 1:04d}": "label_range"}
    repaired = [s for s in samples if s["__key__"].endswith(f"{damage['some_nan'] + 1:04d}")][0]
    assert repaired["__repairs__"] == ["depth_invalid_zeroed"] and (repaired["depth"][:3, :3] == 0).all()
    manifests = shard_corpus("nyuv2", bad, tmp_path / "shards", max_skip_fraction=0.9, progress=False)
    report = manifests["test"]["report"]
    assert report["raw"] == TEST == report["written"] + report["skipped"]
    assert report["skipped_by_reason"] == {"invalid_depth": 2, "label_range": 1}
    assert report["repairs"] == {"depth_invalid_zeroed": 1}
    assert manifests["train"]["report"]["skipped"] == 0


def test_an_unreadable_frame_is_a_read_error_skip(tmp_path, root):
    """MATLAB writes v7.3 arrays gzip-chunked; a damaged chunk fails that frame only, a named skip."""
    bad = _copy(root, tmp_path / "bad")
    frame = int(scipy.io.loadmat(bad / SPLITS)["testNdxs"].ravel()[0]) - 1
    with h5py.File(bad / LABELED, "r+") as f:
        depths, attrs = f["depths"][()], dict(f["depths"].attrs)
        del f["depths"]
        rechunked = f.create_dataset("depths", data=depths, chunks=(1, *depths.shape[1:]), compression="gzip")
        rechunked.attrs.update(attrs)
        chunk = rechunked.id.get_chunk_info_by_coord((frame, 0, 0))
    with open(bad / LABELED, "r+b") as raw:  # overwrite the frame's compressed bytes: inflate() fails on it
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    samples, skips = _read(bad, "test")
    assert [(s.key.rsplit("/", 1)[1], s.reason) for s in skips] == [(f"{frame + 1:04d}", "read_error")]
    assert "frame" in skips[0].detail and len(samples) + len(skips) == TEST


def test_corrupt_or_missing_files_fail_naming_them(tmp_path, root):
    broken = _copy(root, tmp_path / "broken")
    (broken / LABELED).write_bytes(b"MATLAB 7.3 MAT-file" + bytes(1000))
    with pytest.raises(ConfigError, match=LABELED):
        list(nyuv2.iter_samples(broken, "train"))
    html = _copy(root, tmp_path / "html")
    (html / MAP40).write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    with pytest.raises(ConfigError, match="HTML"):
        nyuv2.features(html)
    (html / SPLITS).unlink()
    with pytest.raises(ConfigError, match="splits.mat"):
        nyuv2.sources(html)


def test_inconsistent_splits_or_13_class_table_fail(tmp_path, root):
    bad = _copy(root, tmp_path / "bad")
    scipy.io.savemat(bad / SPLITS, {"trainNdxs": np.array([[0.0], [1.0]]), "testNdxs": np.array([[2.0]])})
    with pytest.raises(ConfigError, match="1-based"):
        list(nyuv2.iter_samples(bad, "train"))
    shutil.copy(root / SPLITS, bad / SPLITS)
    struct = {"labels13": np.ones((1, 40)), "classNames": np.array([["x"] * 13], dtype=object)}
    scipy.io.savemat(bad / MAP13, {"classMapping13": struct})
    with pytest.raises(ConfigError, match="40 -> 13"):
        list(nyuv2.iter_samples(bad, "train"))


def test_image_size_option_resizes_at_shard_time(root):
    features = nyuv2.features(root, image_size=[15, 20])
    sample = _read(root, "valid", image_size=[15, 20])[0][0]
    check_sample(_clean(sample), features)
    assert sample["normal"].shape == (15, 20, 3) and features["label"].shape == (15, 20)
    for entry in (nyuv2.features, nyuv2.describe, nyuv2.sources):  # the old name fails, never ignored
        with pytest.raises(ConfigError, match="'size' is now 'image_size'"):
            entry(root, size=[15, 20])
    with pytest.raises(ConfigError, match="'size' is now 'image_size'"):
        nyuv2.count_raw(root, "train", size=[15, 20])
