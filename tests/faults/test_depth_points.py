"""6.6 Depth and 6.7 point clouds: SUN RGB-D (16-bit toolbox PNGs, points back-projected from them) and
NYUv2 (float metres in the labeled .mat file)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from mmdata.corpora import nyuv2, sunrgbd
from mmdata.corpora.check import check_value
from mmdata.errors import SampleError
from mmdata.modalities import depth as depth_io
from mmdata.synth.nyuv2 import LABELED, SPLITS
from mmdata.synth.nyuv2 import generate as generate_nyuv2
from mmdata.synth.sunrgbd import generate as generate_sunrgbd
from mmdata.synth.sunrgbd import scene_name
from tests.faults._helpers import split_items

OPTIONS = {"num_points": 256, "min_points": 64, "max_boxes": 8}


@pytest.fixture(scope="module")
def sun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sunrgbd(tmp_path_factory.mktemp("sun") / "raw", seed=0, train=10, test=4)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_nyuv2(tmp_path_factory.mktemp("nyu") / "nyuv2", seed=0, train=6, test=4, height=30, width=40)


def _depth_png(root: Path, scene: int) -> Path:
    return next((root / "SUNRGBD" / scene_name(scene) / "depth").glob("*.png"))


def _sun_skips(root: Path) -> dict[str, tuple[str, str]]:
    """scene -> (reason, source) of the train split's skips."""
    _, skips = split_items(list(sunrgbd.iter_samples(root, "train", **OPTIONS)))
    return {s.key.rsplit("/", 1)[1]: (s.reason, s.source) for s in skips}


def test_dep_04_depth_and_rgb_of_different_sizes_are_shape_mismatch(sun, tmp_path):
    """DEP-04: a valid 16-bit depth map whose size differs from the paired RGB image is a ``shape_mismatch``
    skip naming the file, never a silent resize of one of them."""
    root = shutil.copytree(sun, tmp_path / "raw")
    height, width = cv2.imread(str(_depth_png(root, 0)), cv2.IMREAD_UNCHANGED).shape
    cv2.imwrite(str(_depth_png(root, 0)), depth_io.encode_depth(np.full((height + 12, width + 16), 2.0)))
    skips = _sun_skips(root)
    assert list(skips.values())[0][0] == "shape_mismatch" and len(skips) == 1


def test_pcd_05_truncated_depth_png_is_a_decode_error_naming_it(sun, tmp_path):
    """PCD-05: the clouds come from depth PNGs; one cut in half is a ``decode_error`` skip naming the PNG."""
    root = shutil.copytree(sun, tmp_path / "raw")
    path = _depth_png(root, 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (reason, source), = _sun_skips(root).values()
    assert reason == "decode_error" and source == str(path)


def test_dep_05_depth_in_millimetres_where_metres_are_expected_is_invalid(nyu, tmp_path):
    """DEP-05: NYUv2 depths are float metres; a frame written in millimetres (x1000) is beyond the 65.535 m
    a 16-bit millimetre map can hold on every pixel: ``invalid_depth``, not a saturated map."""
    root = shutil.copytree(nyu, tmp_path / "nyuv2")
    frame = int(scipy.io.loadmat(root / SPLITS)["testNdxs"].ravel()[0]) - 1
    with h5py.File(root / LABELED, "r+") as f:
        f["depths"][frame] = f["depths"][frame] * 1000.0
    samples, skips = split_items(list(nyuv2.iter_samples(root, "test")))
    assert [(s.key.rsplit("/", 1)[1], s.reason) for s in skips] == [(f"{frame + 1:04d}", "invalid_depth")]
    assert len(samples) == 3


@pytest.mark.parametrize("name, value, reason, named", [
    ("points", np.full((256, 3), np.nan, np.float32), "non_finite", "points"),
    ("points", np.zeros((256, 2), np.float32), "shape", "(256, 3)"),
    ("points", np.zeros((256, 7), np.float32), "shape", "(256, 7)"),
    ("points", np.zeros((256, 3), np.float16), "dtype", "float16"),
    ("points_rgb", np.full((256, 3), 2.0, np.float32), "value_range", "points_rgb"),
])
def test_pcd_02_03_bad_clouds_fail_the_schema_naming_expected_and_got(name, value, reason, named):
    """PCD-02/PCD-03: NaN coordinates, N x 2 / N x 7 arrays and float16 fail the SUN RGB-D schema before any
    write, with the field and the shape or dtype in the message (colour outside 0..1 too)."""
    spec = sunrgbd.features(".", **OPTIONS)[name]
    with pytest.raises(SampleError) as err:
        check_value(name, value, spec)
    assert err.value.reason == reason and named in str(err.value)
