"""SUN RGB-D: the mini's layout and signal, depth decoding, back-projection, Rtilt, boxes, skips and repairs."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

from mmdata.corpora import sunrgbd
from mmdata.corpora.base import Skip
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError, SampleError
from mmdata.modalities import boxes as box_io
from mmdata.modalities import depth as depth_io
from mmdata.shards.build import shard_corpus
from mmdata.synth.sunrgbd import generate, scene_name
from mmdata.types import KEY_PATTERN

TRAIN, TEST = 20, 8
OPTIONS = {"num_points": 512, "min_points": 128, "max_boxes": 8}
SPLIT = "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("sunrgbd") / "raw", seed=0, train=TRAIN, test=TEST)


def _read(root: Path, split: str, **options: object) -> tuple[list[dict], list[Skip]]:
    items = list(sunrgbd.iter_samples(root, split, **{**OPTIONS, **options}))
    return [i for i in items if not isinstance(i, Skip)], [i for i in items if isinstance(i, Skip)]


def _inside(points: np.ndarray, box: np.ndarray, margin: float = 0.03) -> np.ndarray:
    """Mask of points inside a VoteNet box (local x along (cos h, -sin h))."""
    d = points - box[:3]
    c, s = math.cos(box[6]), math.sin(box[6])
    along, across = d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c
    return (np.abs(along) <= box[3] + margin) & (np.abs(across) <= box[4] + margin) & \
        (np.abs(d[:, 2]) <= box[5] + margin)


# --- the synthetic mini ---


def test_generate_writes_the_scene_folder_layout(root: Path) -> None:
    scene = root / "SUNRGBD" / scene_name(1)
    files = sorted(p.relative_to(scene).as_posix() for p in scene.rglob("*") if p.is_file())
    assert files == ["annotation3Dfinal/index.json", "depth/0000002.png", "depth_bfx/0000002.png",
                     "extrinsics/20150118235401.txt", "image/0000002.jpg", "intrinsics.txt", "scene.txt"]
    assert (root / "SUNRGBD" / "kv1/NYUdata/NYU0001/image/NYU0001.jpg").is_file()
    raw = cv2.imread(str(scene / "depth/0000002.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (72, 96)
    mat = loadmat(root / SPLIT)
    assert mat["alltrain"].shape == (1, TRAIN) and mat["alltest"].shape == (1, TEST)
    assert str(mat["alltrain"][0, 0][0]) == "/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001"
    assert np.loadtxt(scene / "extrinsics/20150118235401.txt").shape == (3, 4)
    objects = json.loads((scene / "annotation3Dfinal/index.json").read_text())["objects"]
    assert objects[1] is None and {"X", "Z", "Ymin", "Ymax"} <= set(objects[-1]["polygon"][0])


def test_generate_is_deterministic(tmp_path: Path, root: Path) -> None:
    same = generate(tmp_path / "same", seed=0, train=TRAIN, test=TEST)
    other = generate(tmp_path / "other", seed=1, train=TRAIN, test=TEST)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        assert (same / rel).read_bytes() == path.read_bytes(), rel
    for rel in (SPLIT, f"SUNRGBD/{scene_name(0)}/image/NYU0001.jpg", f"SUNRGBD/{scene_name(0)}/intrinsics.txt"):
        assert (other / rel).read_bytes() != (root / rel).read_bytes(), rel


def test_signal_colour_and_height_tell_the_lookalike_pairs_apart(root: Path) -> None:
    samples = _read(root, "train")[0] + _read(root, "valid")[0] + _read(root, "test")[0]
    rgb: dict[str, list] = {}
    height: dict[str, list] = {}
    for s in samples:
        for box in s["label"][s["label"][:, 7] >= 0]:
            inside = _inside(s["points"], box)
            if inside.any():
                name = sunrgbd.CLASSES[int(box[7])]
                rgb.setdefault(name, []).append(s["points_rgb"][inside].mean(0))
                height.setdefault(name, []).append(s["points_height"][inside].min())
    mean = {k: np.mean(v, axis=0) for k, v in rgb.items()}
    assert np.abs(mean["chair"] - mean["toilet"]).max() > 0.3 and np.abs(mean["table"] - mean["desk"]).max() > 0.2
    assert np.abs(mean["night_stand"] - mean["bookshelf"]).max() < 0.1  # same colour: only height separates
    assert np.median(height["bookshelf"]) > np.median(height["night_stand"]) + 0.4


# --- depth, back-projection, Rtilt ---


def test_depth_bit_rotation_round_trip_and_clip() -> None:
    assert depth_io.encode_depth(np.array([[1.0]]))[0, 0] == 8000  # 1000 mm rotated left by 3
    assert depth_io.decode_depth(np.array([[8000]], np.uint16))[0, 0] == pytest.approx(1.0)
    high = np.array([[0x2000]], np.uint16)  # bit 13 set: (d >> 3) | (d << 13) = 1024 -> 1.024 m
    assert depth_io.decode_depth(high)[0, 0] == pytest.approx(1.024)
    metres = np.random.default_rng(0).uniform(0.0, 7.999, (40, 30)).round(3)
    np.testing.assert_allclose(depth_io.decode_depth(depth_io.encode_depth(metres)), metres, atol=5e-4)
    every = np.arange(65536, dtype=np.uint16)  # rotation is a bijection: mm = 65535 decodes past 8 m
    decoded = depth_io.decode_depth(every.reshape(256, 256))
    assert decoded.max() == depth_io.CLIP_M and np.unique(decoded[decoded < 8]).size == 8000


def test_back_projection_is_the_toolbox_formula_and_open3d_bit_for_bit(root: Path) -> None:
    """A scene's files through ``convention="matlab"``: ``read_3d_pts_general.m`` literally, and open3d's
    ``create_from_rgbd_image`` (the reader's back-projection before there was one function) with its colours."""
    import open3d as o3d

    files = sunrgbd.scene_files(root / "SUNRGBD" / scene_name(1))
    k = depth_io.read_intrinsics(files["intrinsics"])
    depth = depth_io.read_depth(files["depth"])
    rgb, valid = depth_io.read_image(files["image"], depth.shape), depth > 0
    xyz = depth_io.back_project(depth, depth_io.Intrinsics.from_matrix(k, *depth.shape), convention="matlab")[valid]
    x, y = np.meshgrid(np.arange(1, depth.shape[1] + 1), np.arange(1, depth.shape[0] + 1))  # meshgrid(1:W, 1:H)
    z = depth.astype(np.float64)
    np.testing.assert_array_equal(xyz, np.stack([(x - k[0, 2]) * z / k[0, 0], (y - k[1, 2]) * z / k[1, 1], z],
                                                axis=-1)[valid])
    h, w = depth.shape
    camera = o3d.camera.PinholeCameraIntrinsic(w, h, k[0, 0], k[1, 1], k[0, 2] - 1.0, k[1, 2] - 1.0)  # 0-based
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(rgb), o3d.geometry.Image(depth), depth_scale=1.0, depth_trunc=depth_io.CLIP_M + 1.0,
        convert_rgb_to_intensity=False)
    cloud = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, camera)
    np.testing.assert_array_equal(xyz, np.asarray(cloud.points))
    np.testing.assert_array_equal(rgb[valid] / 255.0, np.asarray(cloud.colors))
    assert len(xyz) == valid.sum() < depth.size  # the raw depth has holes, dropped as VoteNet does


def _floor_normal(points: np.ndarray, height: np.ndarray) -> np.ndarray:
    floor = points[height[:, 0] < 0.02]
    return np.linalg.svd(floor - floor.mean(0))[2][-1]


def test_rtilt_makes_the_floor_horizontal(root: Path) -> None:
    samples, _ = _read(root, "test", depth_source="depth_bfx")
    normal = _floor_normal(samples[0]["points"], samples[0]["points_height"])
    assert abs(normal[2]) > 0.999
    k, rtilt = samples[0]["meta_calib"].astype(np.float64)
    assert not np.allclose(rtilt, np.eye(3), atol=0.05)  # the camera is tilted: Rtilt does the work
    e = np.loadtxt(next((root / "SUNRGBD" / samples[0]["meta_scene"] / "extrinsics").glob("*.txt")))[:, :3]
    np.testing.assert_allclose(rtilt, depth_io.FLIP @ e @ depth_io.FLIP.T, atol=1e-6)
    wall = depth_io.back_project(np.full((60, 80), 2.0), depth_io.Intrinsics.from_matrix(k, 60, 80),
                                 convention="matlab")
    level = depth_io.upright(wall.reshape(-1, 3), np.eye(3))
    assert np.ptp(level[:, 1]) < 1e-9  # with Rtilt = I, a fronto-parallel wall stays at y = depth


# --- samples, keys, boxes ---


def test_splits_keys_and_schema(root: Path) -> None:
    read = {split: _read(root, split) for split in sunrgbd.CORPUS.splits}
    assert all(not skips for _, skips in read.values())
    assert {s: len(v[0]) for s, v in read.items()} == {"train": TRAIN - TRAIN // 10, "valid": TRAIN // 10,
                                                        "test": TEST}
    assert [s["meta_scene"] for s in read["valid"][0]] == [scene_name(9), scene_name(19)]
    keys = [s["__key__"] for v in read.values() for s in v[0]]
    assert len(set(keys)) == len(keys) and all(KEY_PATTERN.match(k) for k in keys)
    features = sunrgbd.features(root, **OPTIONS)
    for sample in read["train"][0]:
        check_sample({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}, features)
        assert sample["points"].shape == (512, 3) and sample["label"].shape == (8, 8)
    long = sunrgbd.scene_key("valid", "xtion/xtion_align_data/" + "x" * 70)
    assert len(long) + len(".points_height.npy") < 100


def test_boxes_follow_votenet_from_a_hand_built_annotation(tmp_path: Path) -> None:
    def poly(x, z, y_min, y_max):
        return [{"X": x, "Z": z, "Ymin": y_min, "Ymax": y_max, "rectangle": True}]

    objects = [
        {"name": "table", "polygon": poly([3, 3, 1, 1], [1, 2, 2, 1], -1.0, 0.5)},       # l along +x
        {"name": "chair:office", "polygon": poly([0.5, -0.5, -0.5, 0.5], [1, 1, -1, -1], 0.0, 1.0)},
        None, {"name": "wall", "polygon": poly([0, 1, 1, 0], [0, 0, 1, 1], 0, 1)},
        {"name": "lamp", "polygon": poly([0, 1, 1, 0], [0, 0, 1, 1], 0, 1)},
        {"name": "sofa", "polygon": poly([0, 0, 1, 1], [0, 0, 1, 1], 0, 1)},             # zero-length edge
        {"name": "bed", "polygon": poly([0, 1, 1, 0], [0, 0, 1, 1], 0.5, 0.5)},          # flat
        {"name": "desk", "polygon": []},
    ]
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"name": "hand", "objects": objects}))
    boxes, repairs = box_io.read_boxes(path)
    np.testing.assert_allclose(boxes[0], [2, 1.5, 0.25, 1, 0.5, 0.75, 0, sunrgbd.CLASSES.index("table")])
    np.testing.assert_allclose(boxes[1], [0, 0, -0.5, 1, 0.5, 0.5, -math.pi / 2, sunrgbd.CLASSES.index("chair")])
    assert len(boxes) == 2 and repairs == [box_io.DROPPED] * 3
    assert box_io.class_name("night_stand") == "night_stand" and box_io.class_name("chair_:x") == "chair"


def test_boxes_enclose_their_points(root: Path) -> None:
    samples, _ = _read(root, "train", depth_source="depth_bfx")
    counts = [_inside(s["points"], b).sum() for s in samples for b in s["label"] if b[7] >= 0]
    assert len(counts) > 20 and np.median(counts) >= 10 and min(counts) >= 1


# --- bad input: skips, repairs, counts reconciled ---


def _break(bad: Path) -> dict[str, str]:
    """Inject one fault per train scene; return scene -> expected skip reason."""
    def scene(i: int) -> Path:
        return bad / "SUNRGBD" / scene_name(i)

    def depth_png(i: int) -> Path:
        return next((scene(i) / "depth").glob("*.png"))

    cv2.imwrite(str(depth_png(0)), np.zeros((60, 80), np.uint16))
    cv2.imwrite(str(depth_png(1)), np.full((72, 96), 100, np.uint8))
    next((scene(2) / "image").glob("*.jpg")).write_bytes(b"not a jpeg")
    (scene(3) / "annotation3Dfinal/index.json").unlink()
    shutil.rmtree(scene(4))
    (next((scene(5) / "extrinsics").glob("*.txt"))).write_text("1 0 0 0\n0 2 0 0\n0 0 1 0\n")
    sparse = np.zeros((60, 80), np.uint16)
    sparse[:10, :10] = depth_io.encode_depth(np.full((10, 10), 2.0))  # 100 valid points < min_points
    cv2.imwrite(str(depth_png(6)), sparse)
    fewer = np.zeros((72, 96), np.uint16)
    fewer[:20, :20] = depth_io.encode_depth(np.full((20, 20), 2.0))  # 400 valid points: resampled
    cv2.imwrite(str(depth_png(7)), fewer)
    note = scene(8) / "annotation3Dfinal/index.json"
    data = json.loads(note.read_text())
    data["objects"].append({"name": "chair", "polygon": [{"X": [0, 0, 0, 0], "Z": [0, 0, 0, 0], "Ymin": 0,
                                                          "Ymax": 1}]})
    note.write_text(json.dumps(data))
    return {scene_name(0): "invalid_depth", scene_name(1): "depth_dtype", scene_name(2): "decode_error",
            scene_name(3): "missing_annotation", scene_name(4): "missing_scene", scene_name(5): "bad_extrinsics",
            scene_name(6): "too_few_points"}


def test_bad_input_is_skipped_or_repaired_and_counts_reconcile(tmp_path: Path, root: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    expected = _break(bad)
    samples, skips = _read(bad, "train")
    got = {s.source.split("/SUNRGBD/")[-1].split("/depth")[0].split("/image")[0].split("/annotation3Dfinal")[0]
           .split("/extrinsics")[0]: s.reason for s in skips}
    assert got == expected
    assert len(samples) + len(skips) == TRAIN - TRAIN // 10
    repaired = {s["meta_scene"]: s["__repairs__"] for s in samples if s["__repairs__"]}
    assert repaired == {scene_name(7): ["resampled_points"], scene_name(8): [box_io.DROPPED]}
    manifests = shard_corpus("sunrgbd", bad, tmp_path / "shards", reader=OPTIONS, max_samples=4,
                             max_skip_fraction=0.5, progress=False)
    report = manifests["train"]["report"]
    assert report["raw"] == report["written"] + report["skipped"] == TRAIN - TRAIN // 10
    assert report["skipped_by_reason"] == {r: 1 for r in expected.values()}
    assert report["repairs"] == {"resampled_points": 1, box_io.DROPPED: 1}


def test_sparse_scenes_are_resampled_as_votenet_does(tmp_path: Path, root: Path) -> None:
    """VoteNet's random_sampling draws with replacement from any non-empty cloud, so by default a scene with 100
    valid points is kept (repair ``resampled_points``); only a scene without any valid point is refused."""
    folder = shutil.copytree(root / "SUNRGBD" / scene_name(0), tmp_path / "SUNRGBD" / "sparse")
    depth_png = next((folder / "depth").glob("*.png"))
    sparse = np.zeros((60, 80), np.uint16)
    sparse[:10, :10] = depth_io.encode_depth(np.full((10, 10), 2.0))
    cv2.imwrite(str(depth_png), sparse)
    sample = sunrgbd.read_scene(folder, "sunrgbd/train/sparse", num_points=512, max_boxes=8)
    assert "resampled_points" in sample["__repairs__"] and sample["points"].shape == (512, 3)
    assert len(np.unique(sample["points"], axis=0)) <= 100
    with pytest.raises(SampleError, match="too_few_points|0 valid points"):
        sunrgbd.sample_points(0, num_points=512, min_points=1, rng=np.random.default_rng(0))


def test_corrupt_split_file_names_it(tmp_path: Path, root: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    (bad / SPLIT).write_bytes(b"MATLAB 5.0 truncated")
    with pytest.raises(ConfigError, match=r"allsplit\.mat.*re-extract"):
        list(sunrgbd.iter_samples(bad, "train"))


def test_configuration_errors(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        list(sunrgbd.iter_samples(tmp_path / "nowhere", "train"))
    with pytest.raises(ConfigError, match="missing split file"):
        list(sunrgbd.iter_samples(tmp_path, "train"))
    with pytest.raises(ConfigError, match="unknown split"):
        list(sunrgbd.iter_samples(root, "dev"))
    with pytest.raises(ConfigError, match="depth_source"):
        list(sunrgbd.iter_samples(root, "train", depth_source="depth_raw"))
    for entry in (sunrgbd.features, sunrgbd.describe, sunrgbd.sources):  # the old name fails, never ignored
        with pytest.raises(ConfigError, match="'depth_dir' is now 'depth_source'"):
            entry(root, depth_dir="depth_bfx")
    with pytest.raises(ConfigError, match="'depth_dir' is now 'depth_source'"):
        sunrgbd.count_raw(root, "train", depth_dir="depth_bfx")
    with pytest.raises(ConfigError, match="min_points"):
        list(sunrgbd.iter_samples(root, "train", num_points=100, min_points=200))


def test_corpus_entry_points(root: Path) -> None:
    corpus = sunrgbd.CORPUS
    assert corpus.name == "sunrgbd" and corpus.task == "detection"
    assert corpus.options() == {"num_points", "min_points", "max_boxes", "depth_source", "split_file", "valid_every",
                                "seed"}
    sources = corpus.sources(root)
    assert sources[0] == root / SPLIT and len(sources) == 1 + 5 * (TRAIN + TEST)
    assert corpus.describe(root).startswith(f"SUN RGB-D scene folders + {SPLIT}: alltrain {TRAIN}, alltest {TEST}")
