"""Depth maps: metres <-> 16-bit millimetres, the SUN RGB-D toolbox's depth files, pinhole back-projection and
surface normals with open3d.

Camera frame as in OpenCV and both toolboxes: x right, y down, z forward (optical axis); depth is the z
coordinate of the surface point (not the distance along the ray). :func:`back_project` is the one
back-projection; its ``convention`` names where pixel centres lie (``"opencv"``: the first at 0, NYU Depth v2's
normals; ``"matlab"``: at 1, SUN RGB-D's points, as the toolboxes' ``meshgrid(1:W, 1:H)``). Normals are unit
vectors in that frame, oriented towards the camera (``n . p < 0`` for a surface point ``p``).

Normals are stored as 8-bit RGB, ``round((n + 1) / 2 * 255)``, the usual normal-map encoding; pixels without
depth get ``(128, 128, 128)``, which decodes to (almost) the zero vector, so "no normal" is recognisable by
its norm (< 0.5) after :func:`decode_normals`.

SUN RGB-D files, as ``read3dPoints.m`` / ``read_3d_pts_general.m`` / ``readframeSUNRGBD.m`` read them
(corpora.md 8.2):

- depth: ``bitor(bitshift(d,-3), bitshift(d,16-3))`` = ``(d >> 3) | (d << 13)`` in uint16 (rotate right by 3),
  ``/ 1000`` -> metres, ``depthInpaint(depthInpaint > 8) = 8``; 0 marks a pixel without depth;
- ``K = reshape(fscanf(intrinsics.txt), [3, 3])'``: the file holds K row by row;
- the toolbox's point is ``(x3, z3, -y3)`` of the camera-frame point ``(x3, y3, z3)`` (:data:`FLIP`): x right,
  y forward, z up;
- ``Rtilt = [1 0 0; 0 0 1; 0 -1 0] * E * [1 0 0; 0 0 -1; 0 1 0]`` with ``E`` the 3x3 part of the LAST
  ``extrinsics/*.txt``, and ``points3d = (Rtilt * points')'``: VoteNet's upright depth frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmdata.errors import FileError

#: Largest depth a uint16 millimetre PNG can hold, in metres.
MAX_DEPTH_M = 65.535
#: Neighbours of the PCA plane fit per point. On 60x80 synthetic scenes, k=16 gave 0.1 deg on a plane and
#: 0.8 deg on a box scene (k=8: 0.2 / 1.4, k=30: 0.05 / 1.7: more neighbours straddle the box edges).
NORMAL_KNN = 16
#: Pixel conventions of :func:`back_project`: where the first pixel's centre lies, 0 or 1.
CONVENTIONS = ("opencv", "matlab")
CLIP_M = 8.0  # read3dPoints.m: depthInpaint(depthInpaint > 8) = 8
#: ``[1 0 0; 0 0 1; 0 -1 0]``: camera (x right, y down, z forward) -> toolbox (x, z, -y).
FLIP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels at a given image size.

    Attributes:
        fx, fy, cx, cy: focal lengths and principal point.
        width, height: the image size they refer to.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, height: int, width: int) -> Intrinsics:
        """The same camera for an image resized to ``height x width`` (pixel-centre convention ignored:
        at the scales used, the half-pixel shift is far below the normals' error)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    @classmethod
    def from_matrix(cls, k: np.ndarray, height: int, width: int) -> Intrinsics:
        """The camera of a ``K [3, 3]`` (skew ignored, as the toolboxes do) for a ``height x width`` image."""
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), width, height)


#: NYU Depth v2 RGB camera (toolbox camera_params.m) at 640 x 480. The labeled set's depths are registered to
#: the RGB image plane, so these (not the IR camera's) are the ones that back-project them (corpora.md 7.3).
NYU_RGB = Intrinsics(518.8579, 519.4696, 325.5824, 253.7362, 640, 480)


def to_millimetres(depth_m: np.ndarray) -> tuple[np.ndarray, int]:
    """Metres (float) -> uint16 millimetres with 0 = no depth; returns the map and the invalid-pixel count.

    Non-finite, non-positive and beyond-:data:`MAX_DEPTH_M` values become 0 (invalid), never a wrapped or
    clipped number. The count excludes exact zeros, which are the sensor's own "no reading" code.

    Args:
        depth_m: depth [H, W] in metres.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(depth) | (depth < 0) | (depth > MAX_DEPTH_M)
    millimetres = np.rint(np.where(bad, 0.0, depth) * 1000.0).astype(np.uint16)
    return millimetres, int(bad.sum())


def apply_matrix(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``points @ matrix.T`` without BLAS: [..., d] points through a [k, d] matrix -> [..., k] float64.

    A BLAS product's rounding depends on its kernel (FMA or not, blocking, thread count), so the same data
    gives other bits under ``OPENBLAS_CORETYPE=Haswell`` than ``=Prescott``; data that is stored (synthetic
    corpora, shards) is computed here instead: each output is ``p0 * m[i, 0] + p1 * m[i, 1] + ...``, every
    product and sum rounded in that fixed order, which is the same on every IEEE-754 machine.
    """
    p, m = np.asarray(points, dtype=np.float64), np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or p.shape[-1] != m.shape[1]:
        raise ValueError(f"points [..., {m.shape[-1]}] expected for a {m.shape} matrix, got {p.shape}")
    out = np.empty((*p.shape[:-1], m.shape[0]))
    for i, row in enumerate(m):
        total = p[..., 0] * row[0]
        for j in range(1, m.shape[1]):
            total = total + p[..., j] * row[j]
        out[..., i] = total
    return out


def matmul_fixed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for small matrices [k, d] x [d, n] -> [k, n], in :func:`apply_matrix`'s fixed order."""
    return apply_matrix(np.asarray(b, dtype=np.float64).T, a).T


def back_project(depth_m: np.ndarray, intrinsics: Intrinsics, *, convention: str) -> np.ndarray:
    """Camera-frame points [H, W, 3] float64 of a depth map [H, W] in metres (zero depth gives the origin).

    ``intrinsics`` are rescaled when the map has another size. Each convention evaluates its reference
    formula operation for operation, so that what is computed from the points keeps its bits:

    - ``"opencv"``: the top-left pixel's centre is ``(0, 0)`` (OpenCV; Bouguet's calibration toolbox, from which
      NYU's ``camera_params.m`` comes); the unit-depth ray ``(u - cx) / fx`` is scaled by z. NYU Depth v2 normals.
    - ``"matlab"``: it is ``(1, 1)``, the toolboxes' ``meshgrid(1:W, 1:H)``, and ``x = (u - cx) .* z / fx`` as
      SUN RGB-D's ``read_3d_pts_general.m`` and NYU's ``depth_plane2depth_world.m`` write it (open3d's
      ``create_from_rgbd_image`` with ``cx - 1``, ``cy - 1`` gives the same bits). SUN RGB-D points.

    The two differ by a one-pixel shift of the principal point: ``"opencv"`` with ``(cx, cy)`` is ``"matlab"``
    with ``(cx + 1, cy + 1)``, up to rounding.

    Args:
        depth_m: depth [H, W] in metres (computed in float64).
        intrinsics: the camera that took the depth map.
        convention: "opencv" or "matlab" (see above).

    Raises:
        ValueError: an unknown convention.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    height, width = depth_m.shape
    k = intrinsics if (intrinsics.height, intrinsics.width) == (height, width) else intrinsics.scaled(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    z = np.asarray(depth_m, dtype=np.float64)
    if convention == "opencv":
        return np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=-1)
    u, v = u + 1.0, v + 1.0
    return np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=-1)


def estimate_normals(depth_m: np.ndarray, intrinsics: Intrinsics, knn: int = NORMAL_KNN) -> np.ndarray:
    """Unit normals [H, W, 3] float64 from a depth map, estimated by open3d and oriented to the camera.

    Each valid pixel is back-projected with ``intrinsics`` (rescaled when the map has another size), open3d
    fits a plane to its ``knn`` nearest points (PCA) and flips it to face the camera at the origin. Pixels
    without depth (0 or non-finite) get the zero vector.

    Args:
        depth_m: depth [H, W] in metres; 0 or non-finite = no depth.
        intrinsics: the camera that took the depth map (for NYUv2 the RGB camera, :data:`NYU_RGB`).
        knn: neighbours per plane fit.
    """
    import open3d as o3d  # imported lazily: ~1 s, and only the RGB-D corpora need it

    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    normals = np.zeros((*depth.shape, 3))
    if valid.sum() < 3:  # a plane needs three points
        return normals
    # "opencv": Bouguet's calibration, which made camera_params.m, puts the first pixel at 0 (the NYU toolbox's
    # depth_plane2depth_world.m counts from 1: a one-pixel shift of the principal point, far below the error).
    points = back_project(np.where(valid, depth, 0.0), intrinsics, convention="opencv")[valid]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(min(knn, int(valid.sum()))))
    cloud.orient_normals_towards_camera_location(np.zeros(3))
    normals[valid] = np.asarray(cloud.normals)
    return normals


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals [H, W, 3] (zero vector = none) -> uint8 [H, W, 3], ``round((n + 1) / 2 * 255)``."""
    return np.rint((np.clip(normals, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_normals` up to quantisation (< 0.5 deg): uint8 [..., 3] -> float32 [..., 3]."""
    return (np.asarray(encoded, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


def angular_error(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Angle in degrees between two normal fields [..., 3] (each vector normalised first)."""
    a = estimate / np.linalg.norm(estimate, axis=-1, keepdims=True).clip(1e-12)
    b = reference / np.linalg.norm(reference, axis=-1, keepdims=True).clip(1e-12)
    return np.degrees(np.arccos(np.clip((a * b).sum(axis=-1), -1.0, 1.0)))


# --- SUN RGB-D toolbox files ---------------------------------------------------------------------------


def decode_depth(raw: np.ndarray) -> np.ndarray:
    """Toolbox decode: ``[H, W]`` uint16 with rotated bits -> float32 metres clipped at 8 m (0 = no depth)."""
    d = raw.astype(np.uint32)
    mm = ((d >> 3) | (d << 13)) & 0xFFFF
    return np.minimum(mm.astype(np.float32) / 1000.0, np.float32(CLIP_M))


def encode_depth(metres: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_depth` below 8 m: metres ``[H, W]`` -> rotated uint16 (rotate left by 3)."""
    mm = np.rint(np.asarray(metres, dtype=np.float64) * 1000.0).astype(np.uint32)
    return (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)


def read_depth(path: Path) -> np.ndarray:
    """Decoded depth ``[H, W]`` float32 metres of a toolbox PNG.

    Raises:
        FileError: ``decode_error`` (unreadable), ``depth_dtype`` (not 16-bit single channel),
            ``invalid_depth`` (no pixel has depth).
    """
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FileError("decode_error", "not a readable PNG", path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise FileError("depth_dtype", f"expected a 16-bit single-channel PNG, got {raw.dtype} {raw.shape}", path)
    depth = decode_depth(raw)
    if not (depth > 0).any():
        raise FileError("invalid_depth", "every pixel is 0 (no depth)", path)
    return depth


def read_image(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """RGB ``[H, W, 3]`` uint8 of a JPEG that must match the depth map's ``shape`` (``shape_mismatch``)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileError("decode_error", "not a readable JPEG", path)
    if bgr.shape[:2] != tuple(shape):
        raise FileError("shape_mismatch", f"image {bgr.shape[:2]} vs depth {tuple(shape)}", path)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _read_numbers(path: Path, reason: str) -> np.ndarray:
    """A text file of 9 (3x3) or 12 (3x4) finite numbers as ``[3, 3 or 4]``."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileError(reason, f"not a list of numbers ({exc})", path) from exc
    if values.size not in (9, 12) or not np.isfinite(values).all():
        raise FileError(reason, f"expected 9 or 12 finite numbers, got {values.size}", path)
    return values.reshape(3, -1)


def read_intrinsics(path: Path) -> np.ndarray:
    """``K [3, 3]`` from ``intrinsics.txt``; ``bad_intrinsics`` unless 3x3 with positive focal lengths."""
    k = _read_numbers(path, "bad_intrinsics")
    if k.shape != (3, 3) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise FileError("bad_intrinsics", f"expected a 3x3 K with positive focal lengths, got {k.tolist()}", path)
    return k


def read_rtilt(path: Path) -> np.ndarray:
    """``Rtilt [3, 3]`` from an extrinsics file: ``FLIP @ E @ FLIP.T`` (``bad_extrinsics`` unless E rotates)."""
    e = _read_numbers(path, "bad_extrinsics")[:, :3]
    # The files hold 6-7 significant digits, hence the loose tolerance.
    if not np.allclose(e @ e.T, np.eye(3), atol=1e-2) or np.linalg.det(e) < 0:
        raise FileError("bad_extrinsics", f"3x3 part is not a rotation: {np.round(e, 4).tolist()}", path)
    return matmul_fixed(matmul_fixed(FLIP, e), FLIP.T)  # stored in meta_calib: no BLAS rounding


def upright(xyz_camera: np.ndarray, rtilt: np.ndarray) -> np.ndarray:
    """Camera-frame points ``[P, 3]`` -> VoteNet's upright depth frame: ``Rtilt @ FLIP @ p`` per point."""
    # Fixed-order sums, not a BLAS matmul: the stored points must not depend on the BLAS kernel or CPU.
    return apply_matrix(xyz_camera, matmul_fixed(rtilt, FLIP))
