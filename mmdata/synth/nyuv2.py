"""Synthetic mini NYU Depth v2 (labeled subset) in the real file layout, with signal only depth or colour carries.

Files written under ``out`` (corpora.md section 7)::

    nyu_depth_v2_labeled.mat   MATLAB v7.3: HDF5 behind a 512-byte MATLAB header (userblock), axes reversed:
                               images (N, 3, W, H) uint8, depths / rawDepths (N, W, H) float32 metres,
                               labels (N, W, H) uint16 (0 = unlabeled, 894-class ids), instances (N, W, H)
                               uint8, accelData (4, N) float32, names (1, 894) / scenes / sceneTypes (1, N)
                               cell arrays of object references into ``#refs#`` (MATLAB char = uint16)
    splits.mat                 MATLAB v5: trainNdxs, testNdxs (n, 1), 1-based frame indices
    classMapping40.mat         MATLAB v5: mapClass (1, 894) 894 -> 1..40, className (1, 40), allClassName (1, 894)
    class13Mapping.mat         MATLAB v5: struct classMapping13 with labels13 (1, 40) and classNames (1, 13)

Scenes: a camera at a random height, pitch and yaw looks at a wall with a floor below. On the wall hang
"pictures" (saturated random colours), "windows" (bright, bluish white) and sometimes a wooden "door"
(standing on the floor); in front of the wall float
"boxes": plates 0.5-1.2 m nearer than the wall with the same colour, size and image-position distribution as
the pictures. So colour alone cannot tell a box from a picture (only depth can), and depth and normals alone
cannot tell a picture, window or door from the wall they are flush with (only colour can): the fused model
beats every single modality. Door and wall share one of the 13 classes (wall), so the 13-class scores differ
from the 40-class ones. Class ids are real 894-class ids (wall 21, floor 11, door 28, picture 64, window 59,
box 26, as in the NYU label list) mapping to the real 40-class ids; the other 894 ids map to 40 (otherprop), a
stand-in for the real table, which the mini never uses. Object boundaries are unlabeled (0), as in the
real annotations. Every draw comes from ``make_rng(seed, "nyuv2", ...)``; the same seed gives identical bytes.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import h5py
import numpy as np

from mmdata.errors import ConfigError
from mmdata.modalities.depth import NYU_RGB, apply_matrix, matmul_fixed
from mmdata.rng import make_rng

LABELED, SPLITS, MAP40, MAP13 = "nyu_depth_v2_labeled.mat", "splits.mat", "classMapping40.mat", "class13Mapping.mat"
#: Class name -> (894-class id, 40-class id) of the classes the mini draws.
CLASSES = {"wall": (21, 1), "floor": (11, 2), "door": (28, 8), "picture": (64, 11), "window": (59, 9),
           "box": (26, 29)}
#: The 40 class names of classMapping40.mat (corpora.md 7.2, the release's own spelling).
NAMES40 = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
           "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
           "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box",
           "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
           "otherfurniture", "otherprop")
NAMES13 = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
           "wall", "window")
#: Fixed header date, so that the same seed writes the same bytes.
_CREATED = "Created on: Mon Jan  1 00:00:00 2024"


def generate(out: Path, *, seed: int = 0, train: int = 32, test: int = 16, height: int = 60,
             width: int = 80) -> Path:
    """Write a synthetic NYUv2 labeled subset (four .mat files) under ``out``.

    Args:
        out: root folder to create (the folder holding the four files, as downloaded).
        seed: base seed; the same seed gives byte-identical files.
        train, test: frames listed in trainNdxs / testNdxs (the reader keeps a tail of train as valid).
        height, width: frame size (the real files are 480 x 640; intrinsics are scaled to the size).

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.nyuv2`.
    """
    if train < 2 or test < 1 or height < 8 or width < 8:
        raise ConfigError(f"need train >= 2, test >= 1 and a frame of at least 8 x 8, got {train}, {test}, "
                         f"{height} x {width}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = train + test
    frames = [_render(make_rng(seed, "nyuv2", "frame", i), height, width) for i in range(n)]
    _write_labeled(out / LABELED, frames, make_rng(seed, "nyuv2", "raw"))
    order = make_rng(seed, "nyuv2", "splits").permutation(n) + 1  # 1-based, as MATLAB writes them
    _write_v5(out / SPLITS, {"trainNdxs": np.sort(order[:train]).astype(np.float64)[:, None],
                             "testNdxs": np.sort(order[train:]).astype(np.float64)[:, None]})
    _write_mappings(out)
    return out


def _rotation(pitch: float, yaw: float) -> np.ndarray:
    """Camera -> world rotation: yaw about y, then pitch about x (y down, z forward; pitch < 0 looks down)."""
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    about_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return matmul_fixed(about_y, about_x)


def _render(rng: np.random.Generator, height: int, width: int) -> dict[str, np.ndarray]:
    """One frame: rgb [H, W, 3] uint8, depth [H, W] float32 metres, labels [H, W] uint16 (894 ids)."""
    k = NYU_RGB.scaled(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)  # camera frame, z = 1
    # Fixed-order products, not BLAS (modalities.depth.apply_matrix): the stored depths must not depend on the CPU.
    world = apply_matrix(rays, _rotation(rng.uniform(-0.35, -0.05), rng.uniform(-0.35, 0.35)))
    wall_z, floor_y = rng.uniform(2.5, 4.0), rng.uniform(1.0, 1.4)
    # Depth is the camera-frame z of the hit point, which is the ray parameter t because rays have z = 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_wall = np.where(world[..., 2] > 0, wall_z / world[..., 2], np.inf)
        t_floor = np.where(world[..., 1] > 0, floor_y / world[..., 1], np.inf)
    on_floor = t_floor < t_wall
    depth = np.where(on_floor, t_floor, t_wall)
    labels = np.where(on_floor, CLASSES["floor"][0], CLASSES["wall"][0]).astype(np.uint16)
    rgb = np.where(on_floor[..., None], _plain(rng), _plain(rng)) + rng.normal(0, 6, (height, width, 3))
    _wall_objects(rng, world * depth[..., None], ~on_floor, labels, rgb, wall_z, floor_y)
    for _ in range(int(rng.integers(1, 3))):  # boxes: plates in front of the wall, coloured like pictures
        near = wall_z - rng.uniform(0.5, 1.2)
        t_box = np.where(world[..., 2] > 0, near / world[..., 2], np.inf)
        inside = _rect(rng, world * t_box[..., None], wall_z, floor_y, near / wall_z) & (t_box < depth)
        depth[inside], labels[inside] = t_box[inside], CLASSES["box"][0]
        rgb[inside] = _textured(rng, (world * t_box[..., None])[inside])
    depth = depth * (1.0 + rng.normal(0.0, 0.0015, depth.shape))  # ~4 mm at 3 m, like in-painted Kinect depth
    labels[_boundaries(labels)] = 0
    return {"rgb": np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "depth": depth.astype(np.float32),
            "labels": labels}


def _wall_objects(rng: np.random.Generator, hit: np.ndarray, on_wall: np.ndarray, labels: np.ndarray,
                  rgb: np.ndarray, wall_z: float, floor_y: float) -> None:
    """Draw, in place, a door (half the frames) and 2-4 pictures or windows flush with the wall."""
    if rng.random() < 0.5:  # doors stand on the floor: 0.8-1 m wide, 1.9-2.1 m high, wood coloured
        centre, half_w = rng.uniform(-0.45, 0.45) * wall_z, rng.uniform(0.4, 0.5)
        top = floor_y - rng.uniform(1.9, 2.1)
        inside = on_wall & (np.abs(hit[..., 0] - centre) < half_w) & (hit[..., 1] > top)
        labels[inside] = CLASSES["door"][0]
        wood = rng.uniform([90, 50, 20], [160, 100, 60])
        rgb[inside] = wood + 12.0 * np.sin(hit[inside][:, 0] * rng.uniform(40, 80))[:, None] \
            + rng.normal(0, 5, (int(inside.sum()), 3))
    for _ in range(int(rng.integers(2, 5))):
        name = "window" if rng.random() < 0.4 else "picture"
        inside = _rect(rng, hit, wall_z, floor_y, 1.0) & on_wall
        labels[inside] = CLASSES[name][0]
        rgb[inside] = _window(rng, int(inside.sum())) if name == "window" else _textured(rng, hit[inside])


def _rect(rng: np.random.Generator, points: np.ndarray, wall_z: float, floor_y: float, scale: float) -> np.ndarray:
    """Mask of points [H, W, 3] inside a random upright rectangle (in x, y); ``scale`` shrinks nearer ones so
    that their size in the image follows the same distribution as on the wall."""
    half_w, half_h = rng.uniform(0.2, 0.5) * scale, rng.uniform(0.15, 0.4) * scale
    centre_x = rng.uniform(-0.45, 0.45) * wall_z * scale
    centre_y = rng.uniform(-0.3 * wall_z, floor_y - 0.5) * scale
    return (np.abs(points[..., 0] - centre_x) < half_w) & (np.abs(points[..., 1] - centre_y) < half_h)


def _plain(rng: np.random.Generator) -> np.ndarray:
    """A greyish wall or floor colour [3]; both surfaces draw from the same distribution."""
    return rng.uniform(100, 185) + rng.uniform(-15, 15, 3)


def _textured(rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    """Saturated random colour with stripes over the object's surface points [n, 3] -> colours [n, 3]."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(120, 255), rng.uniform(90, 230)]]], dtype=np.float32)
    base = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
    phase = apply_matrix(points[:, :2], rng.normal(0, 12, (1, 2)))[:, 0]
    return base + 20.0 * np.sin(phase)[:, None] + rng.normal(0, 6, (len(points), 3))


def _window(rng: np.random.Generator, count: int) -> np.ndarray:
    """Bright bluish-white window pixels [count, 3]."""
    return rng.uniform([215, 225, 235], [250, 252, 255]) + rng.normal(0, 4, (count, 3))


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (left unlabeled, as annotators leave edges)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edge


def _v73_header() -> bytes:
    """The 512-byte userblock MATLAB writes before the HDF5 data of a v7.3 file."""
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, {_CREATED} HDF5 schema 1.00 .".encode("ascii")
    # 116 bytes of text, 8 bytes subsystem offset, version 0x0200 and the endian mark "IM" (little endian).
    return text.ljust(116, b" ") + bytes(8) + b"\x00\x02IM" + bytes(512 - 128)


def _write_labeled(path: Path, frames: list[dict[str, np.ndarray]], rng: np.random.Generator) -> None:
    """The v7.3 file: HDF5 with a 512-byte MATLAB header, MATLAB's column-major axes seen reversed."""
    n = len(frames)
    depths = np.stack([f["depth"].T for f in frames])  # (N, W, H)
    raw = np.where(rng.random(depths.shape) < 0.03, np.float32(0), depths)  # holes, as in rawDepths
    arrays = {"images": (np.stack([f["rgb"].transpose(2, 1, 0) for f in frames]), "uint8"),
              "depths": (depths, "single"), "rawDepths": (raw, "single"),
              "labels": (np.stack([f["labels"].T for f in frames]), "uint16"),
              "instances": (np.stack([(f["labels"].T > 0).astype(np.uint8) for f in frames]), "uint8"),
              "accelData": (np.zeros((4, n), np.float32), "single")}
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        for name, (array, matlab_class) in arrays.items():
            f.create_dataset(name, data=array, track_times=False).attrs["MATLAB_class"] = np.bytes_(matlab_class)
        used = {id894 for id894, _ in CLASSES.values()}
        _cell(f, refs, "names", [_class_name(i) for i in range(1, 895)], skip=set(range(1, 895)) - used)
        _cell(f, refs, "scenes", [f"synthetic_room_{i + 1:04d}" for i in range(n)])
        _cell(f, refs, "sceneTypes", ["synthetic_room"] * n)
    with open(path, "r+b") as f:
        f.write(_v73_header())


def _class_name(class_id: int) -> str:
    return next((name for name, (i, _) in CLASSES.items() if i == class_id), f"class{class_id}")


def _cell(f: h5py.File, refs: h5py.Group, name: str, texts: list[str], skip: set[int] = frozenset()) -> None:
    """A MATLAB 1-column cell of strings: (1, n) object references to uint16 char arrays in ``#refs#``.

    Entries whose 1-based index is in ``skip`` point to one shared empty char array (keeps the file small).
    """
    empty = refs.create_dataset(f"{name}_empty", data=np.zeros((2,), np.uint64), track_times=False)
    empty.attrs["MATLAB_class"], empty.attrs["MATLAB_empty"] = np.bytes_("char"), np.uint8(1)
    out = np.empty((1, len(texts)), dtype=h5py.ref_dtype)
    for i, text in enumerate(texts):
        if i + 1 in skip:
            out[0, i] = empty.ref
            continue
        char = refs.create_dataset(f"{name}_{i}", data=np.frombuffer(text.encode("utf-16-le"), np.uint16)[:, None],
                                   track_times=False)
        char.attrs["MATLAB_class"] = np.bytes_("char")
        out[0, i] = char.ref
    f.create_dataset(name, data=out, track_times=False).attrs["MATLAB_class"] = np.bytes_("cell")


def _write_v5(path: Path, variables: dict[str, object]) -> None:
    """``scipy.io.savemat`` with a fixed header date (scipy writes the current time, breaking determinism)."""
    import scipy.io  # imported here: every synth stage imports this module through the registry

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = f"MATLAB 5.0 MAT-file, Platform: GLNXA64, {_CREATED}".encode("ascii").ljust(116, b" ")
    path.write_bytes(bytes(data))


def _write_mappings(out: Path) -> None:
    """classMapping40.mat and class13Mapping.mat with the real shapes and the real 40 -> 13 table."""
    from mmdata.metrics.segmentation import NYU40_TO_13  # here: keeps mmdata.metrics out of other corpora's stages

    map_class = np.full((1, 894), 40.0)  # stand-in: every id the mini does not draw is "otherprop"
    for id894, id40 in CLASSES.values():
        map_class[0, id894 - 1] = id40
    _write_v5(out / MAP40, {"mapClass": map_class, "className": _cellstr(NAMES40),
                            "allClassName": _cellstr([_class_name(i) for i in range(1, 895)])})
    struct = {"labels13": NYU40_TO_13[1:].astype(np.float64)[None, :], "classNames": _cellstr(NAMES13)}
    _write_v5(out / MAP13, {"classMapping13": struct})


def _cellstr(texts: list[str] | tuple[str, ...]) -> np.ndarray:
    """A (1, n) object array of str, which savemat writes as a MATLAB cell array of char."""
    cell = np.empty((1, len(texts)), dtype=object)
    cell[0, :] = list(texts)
    return cell
