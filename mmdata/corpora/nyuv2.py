"""NYU Depth v2 (labeled subset) reader: RGB, depth, surface normals and 40-class label maps per frame.

Provenance (corpora.md section 7):

- ``nyu_depth_v2_labeled.mat`` (horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/), MATLAB v7.3, i.e. HDF5
  behind a 512-byte header; h5py sees MATLAB's column-major arrays with axes reversed: images (N, 3, W, H),
  depths (N, W, H) float metres (in-painted, already in the RGB image plane), labels (N, W, H) uint16 with
  0 = unlabeled and 1..894 class ids. Frames are transposed back to (H, W) here.
- ``splits.mat`` (trainNdxs 795, testNdxs 654, 1-based), ``classMapping40.mat`` (mapClass 894 -> 1..40,
  className) and ``class13Mapping.mat`` (labels13 40 -> 1..13), as shipped by ESANet / nyuv2-python-toolkit.

Canonical sample (``nyuv2/<split>/<frame:04d>``, the 1-based frame number as in ESANet's file names):

- ``image`` uint8 [H, W, 3] RGB, lossless PNG (the .mat holds decoded pixels; no source JPEG to keep).
- ``depth`` uint16 [H, W] millimetres, 0 = no depth, 16-bit PNG (ESANet's convention: metres x 1000).
- ``normal`` uint8 [H, W, 3] PNG: surface normals estimated by open3d from ``depth`` back-projected with the
  RGB intrinsics (:data:`mmdata.modalities.depth.NYU_RGB`, scaled to the frame), camera frame (x right, y down,
  z forward), oriented to the camera, encoded ``(n + 1) / 2 * 255``; pixels without depth hold 128.
- ``label`` uint8 [H, W]: 0 = void, 1..40 the NYUv2-40 classes via mapClass. The 13-class map is not stored:
  it is the fixed table ``labels13`` of class13Mapping.mat, which this reader checks equals
  :data:`mmdata.metrics.segmentation.NYU40_TO_13`, and the ``segmentation`` metrics apply it.
- ``meta_scene`` the frame's scene name (``scenes`` cell), for scene-grouped analyses.

Splits: "train" is trainNdxs minus its last ``valid_fraction`` (frames are ordered by scene, so the tail holds
other scenes than the rest), "valid" that tail, "test" testNdxs.

Bad input: unreadable frame -> Skip ``read_error``; label id outside the mapping -> ``label_range``; depth with
more than ``max_invalid_depth`` of its pixels 0 / NaN / negative / beyond 65.535 m (all zeros or all NaN
included) -> ``invalid_depth``; fewer invalid pixels are stored as 0 (repair ``depth_invalid_zeroed``);
a corrupt or missing .mat file (e.g. an HTML page saved by wget, fusenet-pytorch#6) -> ConfigError naming it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.modalities.depth import NORMAL_KNN, NYU_RGB, encode_normals, estimate_normals, to_millimetres
from mmdata.errors import BadInputError, ConfigError
from mmdata.types import Features, Field, Sample, make_key

NAME = "nyuv2"
URL = "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat"
LABELED, SPLITS, MAP40, MAP13 = "nyu_depth_v2_labeled.mat", "splits.mat", "classMapping40.mat", "class13Mapping.mat"
DEPTH_SOURCES = ("depths", "rawDepths")


def _paths(root: str | Path) -> dict[str, Path]:
    base = require_root(root, NAME)
    paths = {name: base / name for name in (LABELED, SPLITS, MAP40, MAP13)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{NAME}: missing {missing}; the root must hold {LABELED} ({URL}) and splits.mat, "
                          f"classMapping40.mat, class13Mapping.mat (ESANet's src/datasets/nyuv2/)")
    return paths


def _matlab(path: Path) -> dict[str, Any]:
    """Variables of a small .mat file (v5 via scipy, v7.3 via h5py), or ConfigError naming the file."""
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except NotImplementedError:  # a v7.3 file: scipy asks for an HDF5 reader
        with h5py.File(path, "r") as f:
            return {k: f[k][()].T for k in f if isinstance(f[k], h5py.Dataset)}
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for garbage; all mean "not a .mat"
        head = path.read_bytes()[:64]
        hint = " (it looks like an HTML page: a failed download)" if b"<" in head[:16].lower() else ""
        raise ConfigError(f"{NAME}: {path} is not a readable MATLAB file{hint}: {exc}; download it again") from exc


def _field(variables: dict[str, Any], name: str, path: Path) -> Any:
    if name not in variables:
        raise ConfigError(f"{NAME}: {path} has no variable {name!r} (found {sorted(variables)}); wrong file?")
    return variables[name]


def _texts(cell: Any) -> list[str]:
    """A loadmat cell array of char (object array of 1-element arrays) as a list of str."""
    return [str(np.ravel(item)[0]) if np.size(item) else "" for item in np.ravel(cell)]


def class_names(root: str | Path) -> tuple[str, ...]:
    """The 40 class names of classMapping40.mat, in id order (1..40)."""
    path = _paths(root)[MAP40]
    names = _texts(_field(_matlab(path), "className", path))
    if len(names) != 40:
        raise ConfigError(f"{NAME}: {path} lists {len(names)} class names, expected 40")
    return tuple(names)


def _mapping(paths: dict[str, Path]) -> np.ndarray:
    """894 -> 40 lookup ``[895]`` uint8 with 0 (void) -> 0; checks the 40 -> 13 table against the metrics'."""
    from mmdata.metrics.segmentation import NYU40_TO_13  # here: keeps mmdata.metrics out of other corpora's stages

    map40 = np.ravel(_field(_matlab(paths[MAP40]), "mapClass", paths[MAP40])).astype(np.int64)
    if map40.min(initial=1) < 0 or map40.max(initial=0) > 40:
        raise ConfigError(f"{NAME}: {paths[MAP40]} mapClass holds ids outside 0..40")
    struct = _field(_matlab(paths[MAP13]), "classMapping13", paths[MAP13])
    labels13 = np.ravel(struct["labels13"][0, 0] if struct.dtype.names else struct).astype(np.int64)
    if not np.array_equal(labels13, NYU40_TO_13[1:]):
        raise ConfigError(f"{NAME}: {paths[MAP13]} labels13 {labels13.tolist()} differs from the standard 40 -> 13 "
                          f"table (Couprie et al. 2013) the segmentation metrics use")
    return np.concatenate([[0], map40]).astype(np.uint8)


def _split_frames(paths: dict[str, Path], split: str, frames: int, valid_fraction: float) -> np.ndarray:
    """0-based frame indices of a split from the 1-based indices in splits.mat (checked)."""
    variables = _matlab(paths[SPLITS])
    train, test = (np.ravel(_field(variables, k, paths[SPLITS])).astype(np.int64) - 1
                   for k in ("trainNdxs", "testNdxs"))
    both = np.concatenate([train, test])
    if both.min(initial=0) < 0 or both.max(initial=0) >= frames or len(np.unique(both)) != len(both):
        raise ConfigError(f"{NAME}: {paths[SPLITS]} indices must be distinct and within 1..{frames} (1-based)")
    n_valid = int(np.ceil(len(train) * valid_fraction))
    if not 0 < n_valid < len(train):
        raise ConfigError(f"{NAME}: valid_fraction {valid_fraction} leaves no train or no valid frame")
    return {"train": train[:-n_valid], "valid": train[-n_valid:], "test": test}[split]


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ConfigError(f"{NAME}: {path} is not a readable MATLAB v7.3 (HDF5) file ({exc}); the download is "
                          f"truncated or corrupt, fetch it again from {URL}") from None


def _datasets(f: h5py.File, path: Path, depth_source: str) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
    """(images, depths, labels) datasets, checked to agree on frames and (W, H)."""
    if depth_source not in DEPTH_SOURCES:
        raise ConfigError(f"{NAME}: depth_source {depth_source!r} not in {DEPTH_SOURCES}")
    missing = [k for k in ("images", depth_source, "labels") if k not in f]
    if missing:
        raise ConfigError(f"{NAME}: {path} lacks {missing}; not the labeled NYUv2 file?")
    images, depths, labels = f["images"], f[depth_source], f["labels"]
    if images.ndim != 4 or images.shape[1] != 3 or not images.shape[:1] + images.shape[2:] == depths.shape \
            == labels.shape:
        raise BadInputError(f"{NAME}: {path}: images {images.shape}, {depth_source} {depths.shape}, labels "
                         f"{labels.shape} do not agree (expected (N, 3, W, H), (N, W, H), (N, W, H))")
    return images, depths, labels


def _size(f: h5py.File, path: Path, image_size: list[int] | None) -> tuple[int, int]:
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    if "images" not in f or f["images"].ndim != 4:
        raise ConfigError(f"{NAME}: {path} has no (N, 3, W, H) images dataset")
    return int(f["images"].shape[3]), int(f["images"].shape[2])


def features(root: str | Path, *, image_size: list[int] | None = None, **options: object) -> Features:
    """The schema; H x W is the file's frame size, or ``image_size`` when frames are resized at shard time."""
    CORPUS.check_options(options)  # the other reader options: an unknown or renamed one fails, never ignored
    path = _paths(root)[LABELED]
    with _open(path) as f:
        height, width = _size(f, path, image_size)
    return {
        "image": Field("uint8", (height, width, 3), "png", description="RGB from `images`, (H, W, 3)"),
        "depth": Field("uint16", (height, width), "png",
                       description="depth in millimetres (`depths` x 1000, or rawDepths), 0 = no depth"),
        "normal": Field("uint8", (height, width, 3), "png",
                        description="surface normals from depth (open3d PCA, knn), RGB intrinsics, camera frame "
                                    "x right y down z forward, towards the camera; (n + 1) / 2 * 255, 128 = none"),
        "label": Field("uint8", (height, width), "png", classes=("void", *class_names(root)),
                       description="NYUv2-40 class per pixel (894 -> 40 by mapClass), 0 = void; 13 classes via "
                                   "class13Mapping labels13 (mmdata.metrics.segmentation.NYU40_TO_13)"),
        "meta_scene": Field("str", (), "txt", description="scene name of the frame (`scenes` cell)"),
    }


def sources(root: str | Path, **options: object) -> list[Path]:
    """The four .mat files."""
    CORPUS.check_options(options)
    return list(_paths(root).values())


def describe(root: str | Path, *, depth_source: str = "depths", valid_fraction: float = 0.1,
             **options: object) -> str:
    """Which files were found, frame count and size, and the split sizes."""
    CORPUS.check_options(options)
    paths = _paths(root)
    with _open(paths[LABELED]) as f:
        images = _datasets(f, paths[LABELED], depth_source)[0]
        frames, (height, width) = images.shape[0], _size(f, paths[LABELED], None)
    counts = {s: len(_split_frames(paths, s, frames, valid_fraction)) for s in ("train", "valid", "test")}
    return (f"NYU Depth v2 labeled (MATLAB v7.3): {frames} frames {height}x{width}, depth from `{depth_source}`; "
            f"splits.mat train {counts['train']} + valid {counts['valid']} (tail of trainNdxs), test {counts['test']}")


def iter_samples(root: str | Path, split: str, *, depth_source: str = "depths", valid_fraction: float = 0.1,
                 image_size: list[int] | None = None, max_invalid_depth: float = 0.9,
                 normal_knn: int = NORMAL_KNN) -> Iterator[Sample | Skip]:
    """Frames of one split in splits.mat order.

    Args:
        root: folder with the four .mat files.
        split: "train", "valid" (last ``valid_fraction`` of trainNdxs) or "test" (testNdxs).
        depth_source: "depths" (in-painted, the benchmark's input) or "rawDepths" (holes = 0).
        valid_fraction: share of trainNdxs held out as valid, cut from its tail (a fraction, not SUN RGB-D's
            ``valid_every`` stride: consecutive frames of one scene look alike, so interleaving would put
            near-duplicates on both sides of the cut).
        image_size: ``[H, W]`` to resize frames to at shard time (area for RGB, nearest for depth and labels), or
            None for the file's frame size.
        max_invalid_depth: largest share of invalid depth pixels a kept frame may have.
        normal_knn: neighbours per normal estimate.

    Yields:
        Samples (see the module docstring) or Skips naming the frame and the reason.

    Raises:
        ConfigError: unknown split, missing or corrupt file, inconsistent splits or mappings.
    """
    yield from iter_part(root, split, 0, None, depth_source=depth_source, valid_fraction=valid_fraction,
                         image_size=image_size, max_invalid_depth=max_invalid_depth, normal_knn=normal_knn)


def iter_part(root: str | Path, split: str, start: int, stop: int | None, *, depth_source: str = "depths",
              valid_fraction: float = 0.1, image_size: list[int] | None = None, max_invalid_depth: float = 0.9,
              normal_knn: int = NORMAL_KNN) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (None: to the end): frames are independent, and
    only the part's frames are read from the HDF5 file (h5py reads one frame per index)."""
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: train, valid, test")
    paths = _paths(root)
    lookup = _mapping(paths)
    with _open(paths[LABELED]) as f:
        arrays = _datasets(f, paths[LABELED], depth_source)
        shape = _size(f, paths[LABELED], image_size)
        for index in _split_frames(paths, split, arrays[0].shape[0], valid_fraction)[start:stop]:
            key = make_key(NAME, split, f"{index + 1:04d}")
            yield _frame(f, arrays, int(index), key, paths[LABELED], lookup, shape, max_invalid_depth, normal_knn)


def _frame(f: h5py.File, arrays: tuple[h5py.Dataset, ...], index: int, key: str, path: Path, lookup: np.ndarray,
           shape: tuple[int, int], max_invalid: float, knn: int) -> Sample | Skip:
    """One frame as a sample, or a Skip (see the module docstring for the reasons)."""
    where = f"frame {index + 1} (1-based)"
    try:
        rgb, depth, labels = (np.ascontiguousarray(np.asarray(a[index]).T) for a in arrays)
    except (OSError, RuntimeError) as exc:
        return Skip(key, str(path), "read_error", f"{where}: {exc}")
    if int(labels.max()) >= len(lookup):
        return Skip(key, str(path), "label_range", f"{where}: label id {int(labels.max())} > {len(lookup) - 1}")
    millimetres, bad = to_millimetres(depth)
    invalid = float(np.mean(millimetres == 0))
    if invalid > max_invalid:
        return Skip(key, str(path), "invalid_depth", f"{where}: {invalid:.0%} of depth pixels invalid "
                    f"({bad} non-finite/negative/out of range), more than max_invalid_depth {max_invalid}")
    if (rgb.shape[0], rgb.shape[1]) != shape:
        rgb = cv2.resize(rgb, shape[::-1], interpolation=cv2.INTER_AREA)
        millimetres = cv2.resize(millimetres, shape[::-1], interpolation=cv2.INTER_NEAREST)
        labels = cv2.resize(labels, shape[::-1], interpolation=cv2.INTER_NEAREST)
    normals = estimate_normals(millimetres / 1000.0, NYU_RGB, knn)
    return {"__key__": key, "image": rgb.astype(np.uint8), "depth": millimetres, "normal": encode_normals(normals),
            "label": lookup[labels], "meta_scene": _scene(f, index), SOURCE: str(path),
            REPAIRS: ["depth_invalid_zeroed"] if bad else []}


def _scene(f: h5py.File, index: int) -> str:
    """The frame's scene name from the ``scenes`` cell (MATLAB char = uint16 codes), or "unknown"."""
    try:
        return "".join(map(chr, np.ravel(f[f["scenes"][0, index]][()]))) or "unknown"
    except (KeyError, ValueError, IndexError, TypeError, OSError):
        return "unknown"


def count_raw(root: str | Path, split: str, *, depth_source: str = "depths", valid_fraction: float = 0.1,
              **options: object) -> RawCount:
    """Frames of one split from splits.mat and the frame count in the .mat header (no frame is read).

    Args:
        root, split, depth_source, valid_fraction, options: as for :func:`iter_samples`.
    """
    check_split(NAME, split, ("train", "valid", "test"))
    CORPUS.check_options(options)
    paths = _paths(root)
    with _open(paths[LABELED]) as f:
        frames = _datasets(f, paths[LABELED], depth_source)[0].shape[0]
    indices = _split_frames(paths, split, frames, valid_fraction)
    return raw_count(len(indices), "frame (splits.mat index)", [Path(root)])


CORPUS = Corpus(name=NAME, splits=("train", "valid", "test"), task="segmentation", features=features,
                iter_samples=iter_samples, sources=sources, describe=describe, count_raw=count_raw, iter_part=iter_part)
