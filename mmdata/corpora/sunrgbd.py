"""SUN RGB-D reader for the official scene folders: upright point clouds with colour and height, VoteNet boxes.

Provenance (corpora.md section 8): ``SUNRGBD.zip`` and ``SUNRGBDtoolbox.zip`` from rgbd.cs.princeton.edu, both
unzipped under one root::

    SUNRGBD/<sensor>/<subset>/<scene>/image/*.jpg, depth/*.png, depth_bfx/*.png, intrinsics.txt,
                                      extrinsics/*.txt, annotation3Dfinal/index.json
    SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat   alltrain (5,285) / alltest (5,050): '/n/fs/sun3d/data/SUNRGBD/...'

Per scene, what the toolbox and VoteNet do (details in :mod:`mmdata.modalities`): decode the bit-rotated depth
(``(d >> 3) | (d << 13)``, ``/ 1000``, clip at 8 m), back-project with K at MATLAB's 1-based pixels, rotate upright
with Rtilt, read the boxes of ``annotation3Dfinal`` in VoteNet's ``[cx, cy, cz, l, w, h, heading, class]``; then
VoteNet's input: ``num_points`` of the valid points drawn without replacement (``make_rng(seed, "sunrgbd",
scene)``), their colour 0..1 and height ``z - np.percentile(z, 0.99)`` (VoteNet's floor estimate, over all valid
points here). Boxes are padded with class -1 rows to ``max_boxes`` (VoteNet's MAX_NUM_OBJ = 64), so scenes
without any of the 10 classes stay in (VoteNet keeps them too) and batches stack.

Splits: ``test`` = alltest; alltrain is cut into ``train`` and ``valid`` (every ``valid_every``-th scene in file
order), since the release has no validation split. Bad input is a Skip naming the file: ``outside_root`` (a listed
scene that is absolute, climbs out with ``..`` or is a symlink leading out of the root), ``missing_scene``,
``missing_<image|depth|extrinsics|intrinsics|annotation>``, ``decode_error``, ``depth_dtype``,
``invalid_depth`` (no pixel has depth), ``shape_mismatch``, ``bad_intrinsics``, ``bad_extrinsics``,
``bad_annotation``, ``too_few_points`` (fewer than ``min_points`` valid points; by default 1: VoteNet's
``random_sampling`` draws from any non-empty cloud, so only a scene without one valid point is refused). Repairs
are counted: ``resampled_points`` (between ``min_points`` and ``num_points`` valid points: drawn with replacement,
as VoteNet's ``random_sampling``), ``dropped_bad_box`` (malformed polygon or non-positive size),
``truncated_boxes`` (beyond ``max_boxes``, one per box). A depth PNG cannot hold NaN; non-finite values anywhere
fail the schema check.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, inside_root, require_root
from mmdata.corpora.ledger import raw_count
from mmdata.errors import ConfigError, FileError, SampleError
from mmdata.modalities import boxes as box_io
from mmdata.modalities import depth as depth_io
from mmdata.rng import make_rng
from mmdata.types import Features, Field, Sample, make_key

NAME = "sunrgbd"
SPLIT_FILE = "SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat"
CLASSES = box_io.CLASSES
FLOOR_PERCENTILE = 0.99  # VoteNet: np.percentile(z, 0.99), the ~1% quantile, not the 99th percentile


def features(root: str | Path, *, num_points: int = 20000, max_boxes: int = 64, **options: object) -> Features:
    """The schema; shapes follow ``num_points`` and ``max_boxes``."""
    CORPUS.check_options(options)
    n = num_points
    return {
        "points": Field("float32", (n, 3), "npy", description="xyz in metres, VoteNet upright depth frame "
                        "(x right, y forward, z up; Rtilt applied), origin at the camera"),
        "points_rgb": Field("float32", (n, 3), "npy", value_range=(0.0, 1.0),
                            description="colour of each point from image/*.jpg, 0..1 (im2double)"),
        "points_height": Field("float32", (n, 1), "npy", description="z minus the floor height "
                               "np.percentile(z, 0.99) over the scene's valid points (VoteNet), metres"),
        "label": Field("float32", (max_boxes, 8), "npy", description=(
            "VoteNet boxes [cx, cy, cz, l, w, h, heading, class]: half sizes (l along the heading = toolbox "
            "coeffs(2), w = coeffs(1), h = coeffs(3)), heading = -atan2(o_y, o_x) clockwise from +x, class "
            "index into " + ", ".join(CLASSES) + "; rows with class -1 pad to max_boxes")),
        "meta_calib": Field("float32", (2, 3, 3), "npy", description="[K (the toolbox's 1-based pixel "
                            "convention), Rtilt]; a camera point p is upright at Rtilt @ FLIP @ p"),
        "meta_scene": Field("str", (), "txt", description="scene folder relative to SUNRGBD/"),
    }


def split_scenes(root: str | Path, split_file: str = SPLIT_FILE) -> dict[str, list[str]]:
    """``{"alltrain": [...], "alltest": [...]}``: scene folders relative to ``SUNRGBD/``, in file order.

    Raises:
        ConfigError: the root or the split file is missing, not a readable .mat, or lacks the cell arrays of
            ``.../SUNRGBD/...`` dirs (one file the whole corpus needs: a stop with the fix, not a skip).
    """
    from scipy.io import loadmat

    path = require_root(root, NAME) / split_file
    if not path.is_file():
        raise ConfigError(f"{NAME}: missing split file {path}; unzip SUNRGBDtoolbox.zip under the root "
                          f"(or set corpora.{NAME}.reader.split_file)")
    try:
        mat = loadmat(path, squeeze_me=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... on a corrupt file
        raise ConfigError(f"{NAME}: cannot read split file {path} ({type(exc).__name__}: {exc}); "
                          f"re-extract SUNRGBDtoolbox.zip") from exc
    return {name: _relative(path, name, mat.get(name)) for name in ("alltrain", "alltest")}


def _relative(path: Path, name: str, cell: object) -> list[str]:
    """One cell array's scene dirs relative to SUNRGBD/ (the toolbox strips the '/n/fs/sun3d/data/' prefix)."""
    if cell is None:
        raise ConfigError(f"{NAME}: split file {path} has no variable {name!r} (expected alltrain and alltest)")
    out = []
    for entry in np.atleast_1d(cell).ravel():
        parts = str(entry).strip().strip("/").split("/") if isinstance(entry, str) else []
        if "SUNRGBD" not in parts or parts[-1] == "SUNRGBD":
            raise ConfigError(f"{NAME}: {path}: {name} entry {entry!r} is not a scene dir under SUNRGBD/")
        out.append("/".join(parts[parts.index("SUNRGBD") + 1:]))
    return out


def split_list(root: str | Path, split: str, *, split_file: str = SPLIT_FILE, valid_every: int = 10) -> list[str]:
    """Scene dirs of ``split`` (train / valid / test), in split-file order."""
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: train, valid, test")
    if valid_every < 2:
        raise ConfigError(f"{NAME}: valid_every must be >= 2, got {valid_every} (corpora.{NAME}.reader)")
    scenes = split_scenes(root, split_file)
    if split == "test":
        return scenes["alltest"]
    want_valid = split == "valid"
    return [s for i, s in enumerate(scenes["alltrain"]) if (i % valid_every == valid_every - 1) == want_valid]


def scene_key(split: str, scene: str) -> str:
    """``sunrgbd/<split>/<subset>-<scene[:24]>-<hash8>``: full kv2 names (~60 characters) would overflow the
    100-byte tar member names, so the name is cut and a blake2b of the whole path keeps keys unique."""
    import hashlib

    parts = scene.split("/")
    digest = hashlib.blake2b(scene.encode("utf-8"), digest_size=4).hexdigest()
    return make_key(NAME, split, f"{parts[-2] if len(parts) > 1 else 'scene'}-{parts[-1][:24]}-{digest}")


def scene_files(folder: Path, depth_source: str = "depth") -> dict[str, Path]:
    """The files the toolbox reads: the first ``image/*.jpg`` and ``<depth_source>/*.png``, the LAST
    ``extrinsics/*.txt`` (``extrinsicsC(end)``), ``intrinsics.txt`` and ``annotation3Dfinal/index.json``.

    Raises:
        FileError: ``missing_<part>`` naming the absent folder or file.
    """
    def pick(sub: str, part: str, pattern: str, last: bool = False) -> Path:
        found = sorted((folder / sub).glob(pattern))
        if not found:
            raise FileError(f"missing_{part}", f"no {pattern} file", folder / sub)
        return found[-1] if last else found[0]

    files = {"image": pick("image", "image", "*.jpg"), "depth": pick(depth_source, "depth", "*.png"),
             "extrinsics": pick("extrinsics", "extrinsics", "*.txt", last=True)}
    for part, rel in (("intrinsics", "intrinsics.txt"), ("annotation", "annotation3Dfinal/index.json")):
        if not (folder / rel).is_file():
            raise FileError(f"missing_{part}", "file not found", folder / rel)
        files[part] = folder / rel
    return files


def sample_points(count: int, *, num_points: int, min_points: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Indices ``[num_points]`` (sorted) of the valid points to keep, and the repairs applied.

    Raises:
        SampleError: ``too_few_points`` when ``count < min_points``.
    """
    if count < max(min_points, 1):
        raise SampleError("too_few_points", f"{count} valid points, need at least {min_points}")
    if count < num_points:  # VoteNet's random_sampling: replace=(N < num_sample)
        return np.sort(rng.choice(count, num_points, replace=True)), ["resampled_points"]
    return np.sort(rng.choice(count, num_points, replace=False)), []


def pad_boxes(boxes: np.ndarray, max_boxes: int) -> tuple[np.ndarray, list[str]]:
    """Boxes ``[n, 8]`` -> ``[max_boxes, 8]`` padded with class -1 rows; extra boxes dropped and counted."""
    out = np.zeros((max_boxes, 8), dtype=np.float32)
    out[:, 7] = -1.0
    kept = boxes[:max_boxes]
    out[:len(kept)] = kept
    return out, ["truncated_boxes"] * (len(boxes) - len(kept))


def read_scene(folder: Path, key: str, *, depth_source: str = "depth", num_points: int = 20000,
               min_points: int = 1, max_boxes: int = 64, seed: int = 0) -> Sample:
    """One scene folder as a sample (fields of :func:`features`, plus ``__source__`` and ``__repairs__``).

    Raises:
        FileError / SampleError: the reasons listed in the module docstring.
    """
    files = scene_files(folder, depth_source)
    k, rtilt = depth_io.read_intrinsics(files["intrinsics"]), depth_io.read_rtilt(files["extrinsics"])
    depth = depth_io.read_depth(files["depth"])
    rgb = depth_io.read_image(files["image"], depth.shape)
    valid = depth > 0  # pixels without depth are dropped, as VoteNet does
    camera = depth_io.back_project(depth, depth_io.Intrinsics.from_matrix(k, *depth.shape), convention="matlab")
    xyz, colour = depth_io.upright(camera[valid], rtilt), rgb[valid] / 255.0
    boxes, repairs = box_io.read_boxes(files["annotation"])
    label, truncated = pad_boxes(boxes, max_boxes)
    scene = folder.as_posix().split("/SUNRGBD/")[-1]
    keep, resampled = sample_points(len(xyz), num_points=num_points, min_points=min_points,
                                    rng=make_rng(seed, NAME, scene))
    floor = np.percentile(xyz[:, 2], FLOOR_PERCENTILE)
    return {"__key__": key, SOURCE: str(folder), REPAIRS: repairs + truncated + resampled,
            "points": xyz[keep].astype(np.float32), "points_rgb": colour[keep].astype(np.float32),
            "points_height": (xyz[keep, 2:3] - floor).astype(np.float32), "label": label,
            "meta_calib": np.stack([k, rtilt]).astype(np.float32), "meta_scene": scene}


def iter_samples(root: str | Path, split: str, *, num_points: int = 20000, min_points: int = 1,
                 max_boxes: int = 64, depth_source: str = "depth", split_file: str = SPLIT_FILE,
                 valid_every: int = 10, seed: int = 0) -> Iterator[Sample | Skip]:
    """Samples of one split in split-file order.

    Args:
        root: folder holding ``SUNRGBD/`` and ``SUNRGBDtoolbox/``.
        split: "train", "valid" (every ``valid_every``-th alltrain scene) or "test" (alltest).
        num_points: points per scene (VoteNet trains on 20,000). min_points: fewer valid points is a Skip (the
            default 1 refuses only empty clouds, which VoteNet cannot sample either; raise it to drop sparse scenes).
        max_boxes: label rows (VoteNet's MAX_NUM_OBJ).
        depth_source: the folder depth is read from, "depth" (raw, VoteNet's) or "depth_bfx" (refined); NYUv2's
            option of the same name picks a dataset of its .mat.
        valid_every: every ``valid_every``-th alltrain scene is valid. A stride (an int), not NYUv2's tail
            ``valid_fraction``: a stride spreads valid over the whole file order, every sensor and subset it
            lists, where a tail holds only its end; NYUv2's frames run scene by scene, where a stride would
            split scenes across the cut, so there the tail is right and here the stride.
        split_file: the .mat with alltrain/alltest, relative to root. seed: the point-sampling seed.

    Yields:
        Samples with ``points [n, 3]``, ``points_rgb [n, 3]``, ``points_height [n, 1]``, ``label [max_boxes,
        8]``, ``meta_calib [2, 3, 3]``, ``meta_scene``; or a Skip naming the file at fault.
    """
    yield from iter_part(root, split, 0, None, num_points=num_points, min_points=min_points, max_boxes=max_boxes,
                         depth_source=depth_source, split_file=split_file, valid_every=valid_every, seed=seed)


def iter_part(root: str | Path, split: str, start: int, stop: int | None, *, num_points: int = 20000,
              min_points: int = 1, max_boxes: int = 64, depth_source: str = "depth", split_file: str = SPLIT_FILE,
              valid_every: int = 10, seed: int = 0) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (None: to the end): scenes are independent (no
    duplicate check), so only the part's scene folders are read."""
    if depth_source not in ("depth", "depth_bfx"):
        raise ConfigError(f"{NAME}: depth_source must be 'depth' or 'depth_bfx', got {depth_source!r}")
    if not 0 < min_points <= num_points or max_boxes < 1:
        raise ConfigError(f"{NAME}: need 0 < min_points <= num_points and max_boxes >= 1, got {min_points}, "
                          f"{num_points}, {max_boxes} (corpora.{NAME}.reader)")
    for scene in split_list(root, split, split_file=split_file, valid_every=valid_every)[start:stop]:
        key = scene_key(split, scene)
        try:
            folder = inside_root(root, "SUNRGBD", scene)  # a split-file string: never a folder outside the root
        except FileError as err:
            yield Skip(key, str(err.path), err.reason, str(err))
            continue
        if not folder.is_dir():
            yield Skip(key, str(folder), "missing_scene", f"{scene} is listed in {split_file} but not on disk")
            continue
        try:
            yield read_scene(folder, key, depth_source=depth_source, num_points=num_points, min_points=min_points,
                             max_boxes=max_boxes, seed=seed)
        except FileError as err:
            yield Skip(key, str(err.path), err.reason, str(err))
        except SampleError as err:
            yield Skip(key, str(folder), err.reason, str(err))


def sources(root: str | Path, *, depth_source: str = "depth", split_file: str = SPLIT_FILE,
            **options: object) -> list[Path]:
    """The split file and every scene file read (those present), in split-file order."""
    CORPUS.check_options(options)  # the other reader options: an unknown or renamed one fails, never ignored
    base, out = require_root(root, NAME), []
    scenes = split_scenes(root, split_file)
    for scene in scenes["alltrain"] + scenes["alltest"]:
        try:
            out += sorted(scene_files(inside_root(base, "SUNRGBD", scene), depth_source).values())
        except FileError:
            continue  # reported as a Skip by iter_samples (missing files, or a scene outside the root)
    return [base / split_file, *out]


def describe(root: str | Path, *, depth_source: str = "depth", split_file: str = SPLIT_FILE,
             **options: object) -> str:
    """Which layout was found, e.g. ``SUN RGB-D scene folders: alltrain 120, alltest 48 scenes (kv1 84, ...)``."""
    CORPUS.check_options(options)
    scenes = split_scenes(root, split_file)
    sensors: dict[str, int] = {}
    for scene in scenes["alltrain"] + scenes["alltest"]:
        sensors[scene.split("/")[0]] = sensors.get(scene.split("/")[0], 0) + 1
    listed = ", ".join(f"{s} {n}" for s, n in sorted(sensors.items()))
    return (f"SUN RGB-D scene folders + {split_file}: alltrain {len(scenes['alltrain'])}, alltest "
            f"{len(scenes['alltest'])} scenes ({listed}); depth from {depth_source}/")


def count_raw(root: str | Path, split: str, *, split_file: str = SPLIT_FILE, valid_every: int = 10,
              depth_source: str = "depth", **options: object) -> RawCount:
    """Scene folders the split file lists for the split (present or not; no image or depth is read).

    Args:
        root, split, split_file, valid_every, depth_source, options: as for :func:`iter_samples`.
    """
    CORPUS.check_options(options)
    scenes = split_list(root, split, split_file=split_file, valid_every=valid_every)
    base = Path(root) / "SUNRGBD"
    # The folders the reader lists files in: each scene's and its image/depth/extrinsics sub-folders.
    folders = [base / s / sub for s in scenes for sub in ("", "image", depth_source, "extrinsics")]
    return raw_count(len(scenes), "scene listed in allsplit.mat", folders)


CORPUS = Corpus(name=NAME, splits=("train", "valid", "test"), task="detection", features=features,
                iter_samples=iter_samples, sources=sources, describe=describe, count_raw=count_raw, iter_part=iter_part)
