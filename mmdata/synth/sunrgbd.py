"""Synthetic mini SUN RGB-D in the official scene-folder layout, ray-cast rooms with boxes that need every modality.

Layout written under ``out`` (corpora.md 8.1; sensor folders as the release names them)::

    SUNRGBD/kv1/NYUdata/NYU0001/                       80 x 60 frames (Kinect v1-like intrinsics)
    SUNRGBD/kv2/kinect2data/000002_2014-05-26_..-resize/  96 x 72 frames (wider field of view)
        image/<frame>.jpg  depth/<frame>.png (bit-rotated mm, with holes)  depth_bfx/<frame>.png (no holes)
        intrinsics.txt (K row by row)  extrinsics/<stamp>.txt (3x4 [E | 0])  scene.txt
        annotation3Dfinal/index.json   {"name", "objects": [{"name", "polygon": [{"X", "Z", "Ymin", "Ymax",
                                        "rectangle"}]}, null, ...], ...}
    SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat         alltrain / alltest: 1 x N cells of '/n/fs/sun3d/...'

Each scene is a room seen from a camera 1.0-1.5 m above the floor, pitched 5-20 degrees down with a little roll
(so Rtilt matters): floor, three walls and 2-4 oriented boxes standing on the floor (rarely none). Depth is the
camera z of the first hit, written as the toolbox stores it: millimetres with the bits rotated left by 3.

Signal design: six of VoteNet's classes in three look-alike pairs, each pair told apart by one modality only:

- chair vs toilet and table vs desk share size and shape and differ only in colour (``points_rgb``);
- night_stand vs bookshelf share size and colour; a bookshelf hangs 0.6-0.9 m above the floor, read off
  directly by ``points_height`` (the camera height varies, so raw z says it only relative to the floor points).

Geometry (``points``) is what localises every box. Every draw comes from ``make_rng(seed, "sunrgbd", ...)``; the
same seed writes byte-identical files (the .mat header's timestamp is replaced by a fixed text).
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from mmdata.errors import ConfigError
from mmdata.modalities.depth import apply_matrix, matmul_fixed
from mmdata.rng import make_rng

#: (VoteNet class, half sizes l, w, h in m, RGB 0..1, elevation of the bottom above the floor in m).
OBJECTS = (
    ("chair", (0.25, 0.25, 0.45), (0.75, 0.18, 0.15), 0.0),
    ("toilet", (0.25, 0.25, 0.45), (0.18, 0.30, 0.80), 0.0),
    ("table", (0.60, 0.40, 0.38), (0.55, 0.35, 0.15), 0.0),
    ("desk", (0.60, 0.40, 0.38), (0.20, 0.55, 0.30), 0.0),
    ("night_stand", (0.25, 0.22, 0.28), (0.80, 0.70, 0.25), 0.0),
    ("bookshelf", (0.25, 0.22, 0.28), (0.80, 0.70, 0.25), 0.75),
)
#: Sensor folder, image size, focal length as a share of the width (kv1 ~0.92, kv2 ~0.73 in the release).
SENSORS = (("kv1/NYUdata", (80, 60), 0.92), ("kv2/kinect2data", (96, 72), 0.73))
FLIP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
PREFIX = "/n/fs/sun3d/data/SUNRGBD/"
MIN_VISIBLE = 40  # pixels of a box that must be visible for it to stay in the scene


def generate(out: Path, *, seed: int = 0, train: int = 120, test: int = 48) -> Path:
    """Write a synthetic SUN RGB-D under ``out``: ``train + test`` scene folders and the split file.

    Args:
        out: the root (holds ``SUNRGBD/`` and ``SUNRGBDtoolbox/``).
        seed: base seed; the same seed gives byte-identical files.
        train, test: scenes listed in alltrain / alltest (the reader keeps every 10th train scene as valid).

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.sunrgbd`.
    """
    if train < 2 or test < 1:
        raise ConfigError(f"need train >= 2 and test >= 1 scenes, got {train}, {test}")
    out = Path(out)
    names = [scene_name(i) for i in range(train + test)]
    for i, name in enumerate(names):
        frame = name.rsplit("/", 1)[-1] if i % 2 == 0 else f"{i + 1:07d}"  # NYU0001.jpg / 0000002.jpg
        _write_scene(out / "SUNRGBD" / name, frame, make_rng(seed, "sunrgbd", "scene", i), SENSORS[i % 2])
    _write_split(out / "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat", names[:train], names[train:], seed)
    return out


def scene_name(i: int) -> str:
    """Scene folder of scene ``i`` relative to SUNRGBD/, named as the release names its kv1 / kv2 scenes."""
    if i % 2 == 0:
        return f"kv1/NYUdata/NYU{i + 1:04d}"
    return f"kv2/kinect2data/{i + 1:06d}_2014-05-26_14-23-37_260595134347_rgbf{i + 1:06d}-resize"


def _rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _camera(rng: np.random.Generator, size: tuple[int, int], focal: float) -> dict:
    """K (1-based pixel convention), Rtilt (pitch down, small roll), E = FLIP' Rtilt FLIP and the height."""
    w, h = size
    f = focal * w * rng.uniform(0.99, 1.01)
    k = np.array([[f, 0.0, w / 2 + 0.5 + rng.uniform(-1, 1)], [0.0, f, h / 2 + 0.5 + rng.uniform(-1, 1)],
                  [0.0, 0.0, 1.0]])
    # Products in a fixed order, never BLAS (modalities.depth.apply_matrix): the files must not depend on the CPU.
    pitch, roll = _rotation_x(-math.radians(rng.uniform(5, 20))), _rotation_y(math.radians(rng.uniform(-3, 3)))
    rtilt = matmul_fixed(pitch, roll)
    e = matmul_fixed(matmul_fixed(FLIP.T, rtilt), FLIP)
    return {"k": k, "rtilt": rtilt, "e": e, "height": rng.uniform(1.0, 1.5), "size": size}


def _rays(cam: dict) -> np.ndarray:
    """Upright ray directions ``[H, W, 3]`` scaled so that the hit distance t is the camera z (the depth)."""
    w, h = cam["size"]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    k = cam["k"]
    d = np.stack([(u + 1 - k[0, 2]) / k[0, 0], (v + 1 - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    return apply_matrix(d, matmul_fixed(cam["rtilt"], FLIP))


def _objects(rng: np.random.Generator, cam: dict) -> list[dict]:
    """0 (rarely) or 2-4 non-overlapping boxes on (or above) the floor, centred inside the image."""
    count = 0 if rng.random() < 0.05 else int(rng.integers(2, 5))
    placed: list[dict] = []
    for _ in range(40 * count):
        if len(placed) == count:
            break
        cls, half, colour, lift = OBJECTS[int(rng.integers(len(OBJECTS)))]
        half = np.asarray(half) * rng.uniform(0.9, 1.1, 3)
        depth = rng.uniform(1.8, 4.0)
        half_view = cam["size"][0] / 2 / cam["k"][0, 0]  # tan of half the horizontal field of view
        centre = np.array([rng.uniform(-0.75, 0.75) * depth * half_view, depth, 0.0])
        centre[2] = -cam["height"] + lift * rng.uniform(0.8, 1.2) + half[2]
        radius = math.hypot(half[0], half[1])
        if any(np.hypot(*(centre[:2] - o["box"][:2])) < radius + o["radius"] + 0.15 for o in placed):
            continue
        if not _in_view(centre, cam):
            continue
        box = np.array([*centre, *half, rng.uniform(-math.pi, math.pi)])
        placed.append({"cls": cls, "box": box, "radius": radius, "colour": np.asarray(colour)})
    return placed


def _in_view(point: np.ndarray, cam: dict) -> bool:
    # Back to the camera frame (x right, y down, z forward).
    p = apply_matrix(point, matmul_fixed(FLIP.T, cam["rtilt"].T))
    u, v = cam["k"][0, 0] * p[0] / p[2] + cam["k"][0, 2], cam["k"][1, 1] * p[1] / p[2] + cam["k"][1, 2]
    w, h = cam["size"]
    return p[2] > 0.5 and 0.1 * w < u < 0.9 * w and 0.15 * h < v < 0.95 * h


def _hit_box(rays: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test of rays from the origin against an oriented box: (t [H, W], inf = miss; face axis [H, W])."""
    c, s = math.cos(box[6]), math.sin(box[6])
    axes = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # local x along (cos h, -sin h): VoteNet
    origin, direction = apply_matrix(-box[:3], axes), apply_matrix(rays, axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-box[3:6] - origin) / direction, (box[3:6] - origin) / direction
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near, t_far = np.nanmax(near, axis=-1), np.nanmin(far, axis=-1)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.inf), np.nanargmax(near, axis=-1)


def _render(rng: np.random.Generator, cam: dict, objects: list[dict]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Depth ``[H, W]`` metres, RGB ``[H, W, 3]`` 0..1 and the visible pixels of each box."""
    rays = _rays(cam)
    room = np.array([rng.uniform(2.5, 3.5), rng.uniform(4.5, 6.0)])  # side-wall x, back-wall y
    with np.errstate(divide="ignore"):
        planes = {"floor": np.where(rays[..., 2] < 0, -cam["height"] / rays[..., 2], np.inf),
                  "back": np.where(rays[..., 1] > 0, room[1] / rays[..., 1], np.inf),
                  "side": np.abs(room[0] / rays[..., 0])}
    tone = {"floor": rng.uniform(0.3, 0.5) + rng.uniform(-0.04, 0.04, 3),
            "back": rng.uniform(0.6, 0.8) + rng.uniform(-0.04, 0.04, 3)}
    tone["side"] = tone["back"] * 0.85
    depth = np.full(rays.shape[:2], np.inf)
    rgb = np.zeros((*rays.shape[:2], 3))
    for name, t in planes.items():
        closer = t < depth
        depth[closer], rgb[closer] = t[closer], tone[name]
    owner = np.full(depth.shape, -1)
    for i, obj in enumerate(objects):
        t, face = _hit_box(rays, obj["box"])
        closer = t < depth
        shade = np.array([0.8, 0.65, 1.0])[face]  # the top face is lit best
        depth[closer], owner[closer] = t[closer], i
        rgb[closer] = obj["colour"][None] * shade[closer][:, None] * rng.uniform(0.9, 1.1)
    rgb += rng.normal(0.0, 0.02, rgb.shape)
    return depth, np.clip(rgb, 0.0, 1.0), [int((owner == i).sum()) for i in range(len(objects))]


def _annotation(name: str, objects: list[dict]) -> dict:
    """index.json in the release's shape: objects with a polygon (corner order as readframeSUNRGBD expects)."""
    entries: list[dict | None] = [{"name": "floor", "polygon": []}, None]
    for obj in objects:
        box = obj["box"]
        c, s = math.cos(box[6]), math.sin(box[6])
        ax, ay = np.array([c, -s]) * box[3], np.array([s, c]) * box[4]
        # c0 -> c1 runs along w, so the toolbox's coeffs(1) = w and its orientation (midpoint of c0 c1) = +l.
        corners = [box[:2] + ax - ay, box[:2] + ax + ay, box[:2] - ax + ay, box[:2] - ax - ay]
        polygon = {"X": [round(float(p[0]), 6) for p in corners], "Z": [round(float(p[1]), 6) for p in corners],
                   "Ymin": round(-float(box[2] + box[5]), 6), "Ymax": round(-float(box[2] - box[5]), 6),
                   "rectangle": True}
        entries.append({"name": obj["cls"], "polygon": [polygon]})
    return {"name": name, "date": "mmdata synthetic", "objects": entries, "frames": [], "fileList": []}


def _write_scene(folder: Path, frame: str, rng: np.random.Generator, sensor: tuple) -> None:
    """One scene folder: image, depth, depth_bfx, intrinsics, extrinsics, scene.txt, annotation3Dfinal."""
    import cv2

    cam = _camera(rng, sensor[1], sensor[2])
    objects = _objects(rng, cam)
    room = int(rng.integers(2**31))  # the same room (walls, tones, noise) if it is rendered again
    depth, rgb, seen = _render(make_rng(room), cam, objects)
    if any(n < MIN_VISIBLE for n in seen):  # annotators box what they see: hidden boxes leave the room
        objects = [o for o, n in zip(objects, seen) if n >= MIN_VISIBLE]
        depth, rgb, _ = _render(make_rng(room), cam, objects)
    holes = rng.random(depth.shape) < 0.03  # the raw sensor's missing pixels; depth_bfx is hole-filled
    for sub, data in (("depth", np.where(holes, 0.0, depth)), ("depth_bfx", depth)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / sub / f"{frame}.png"), _encode_depth(data))
    (folder / "image").mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "image" / f"{frame}.jpg"), np.rint(rgb[:, :, ::-1] * 255).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    (folder / "extrinsics").mkdir(exist_ok=True)
    extrinsics = np.hstack([cam["e"], np.zeros((3, 1))])
    (folder / "extrinsics" / "20150118235401.txt").write_text(_matrix_text(extrinsics))
    (folder / "intrinsics.txt").write_text(_matrix_text(cam["k"]))
    (folder / "scene.txt").write_text(("bedroom", "office", "living_room")[int(rng.integers(3))])
    (folder / "annotation3Dfinal").mkdir(exist_ok=True)
    (folder / "annotation3Dfinal" / "index.json").write_text(json.dumps(_annotation(folder.name, objects)))


def _encode_depth(metres: np.ndarray) -> np.ndarray:
    """Metres -> the toolbox's PNG values: millimetres with the 16 bits rotated left by 3."""
    mm = np.rint(np.clip(metres, 0.0, 8.0) * 1000.0).astype(np.uint32)
    return (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in matrix)


def _write_split(path: Path, train: list[str], test: list[str], seed: int) -> None:
    """allsplit.mat (MATLAB v5): alltrain / alltest as 1 x N cell arrays of '/n/fs/sun3d/data/SUNRGBD/...'."""
    from scipy.io import savemat

    def cell(names: list[str]) -> np.ndarray:
        array = np.empty((1, len(names)), dtype=object)
        array[0, :] = [PREFIX + n for n in names]
        return array

    buf = io.BytesIO()
    savemat(buf, {"alltrain": cell(train), "alltest": cell(test)}, format="5")
    data = bytearray(buf.getvalue())
    # The v5 header's 116-byte text carries a creation time; a fixed text keeps the file byte-identical.
    data[:116] = f"MATLAB 5.0 MAT-file, written by mmdata.synth.sunrgbd, seed {seed}".ljust(116).encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
