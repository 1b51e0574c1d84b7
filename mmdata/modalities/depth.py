"""Depth maps: metres <-> 16-bit millimetres, pinhole back-projection and surface normals with open3d.

Camera frame as in OpenCV and the NYU toolbox: x right, y down, z forward (optical axis); depth is the z
coordinate of the surface point (not the distance along the ray). Normals are unit vectors in that frame,
oriented towards the camera (``n . p < 0`` for a surface point ``p``).

Normals are stored as 8-bit RGB, ``round((n + 1) / 2 * 255)``, the usual normal-map encoding; pixels without
depth get ``(128, 128, 128)``, which decodes to (almost) the zero vector, so "no normal" is recognisable by
its norm (< 0.5) after :func:`decode_normals`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Largest depth a uint16 millimetre PNG can hold, in metres.
MAX_DEPTH_M = 65.535
#: Neighbours of the PCA plane fit per point. On 60x80 synthetic scenes, k=16 gave 0.1 deg on a plane and
#: 0.8 deg on a box scene (k=8: 0.2 / 1.4, k=30: 0.05 / 1.7: more neighbours straddle the box edges).
NORMAL_KNN = 16


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


def backproject(depth_m: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Camera-frame points [H, W, 3] of a depth map [H, W] in metres (zero depth gives the origin)."""
    height, width = depth_m.shape
    k = intrinsics if (intrinsics.height, intrinsics.width) == (height, width) else intrinsics.scaled(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    z = np.asarray(depth_m, dtype=np.float64)
    return np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=-1)


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
    points = backproject(np.where(valid, depth, 0.0), intrinsics)[valid]
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
