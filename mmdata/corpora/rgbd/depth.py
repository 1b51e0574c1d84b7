"""SUN RGB-D toolbox geometry: bit-rotated depth PNGs, K and Rtilt, back-projection to upright points.

What ``read3dPoints.m`` / ``read_3d_pts_general.m`` / ``readframeSUNRGBD.m`` do (corpora.md 8.2):

- depth: ``bitor(bitshift(d,-3), bitshift(d,16-3))`` = ``(d >> 3) | (d << 13)`` in uint16 (rotate right by 3),
  ``/ 1000`` -> metres, ``depthInpaint(depthInpaint > 8) = 8``; 0 marks a pixel without depth;
- ``K = reshape(fscanf(intrinsics.txt), [3, 3])'``: the file holds K row by row;
- pixels are ``meshgrid(1:W, 1:H)`` (1-based), ``x3 = (x - cx) z / fx``, ``y3 = (y - cy) z / fy``, and the
  point is ``(x3, z3, -y3)``: camera (x right, y down, z forward) -> x right, y forward, z up;
- ``Rtilt = [1 0 0; 0 0 1; 0 -1 0] * E * [1 0 0; 0 0 -1; 0 1 0]`` with ``E`` the 3x3 part of the LAST
  ``extrinsics/*.txt``, and ``points3d = (Rtilt * points')'``: VoteNet's upright depth frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdata.modalities.depth import apply_matrix, matmul_fixed
from mmdata.errors import FileError, SampleError

CLIP_M = 8.0  # read3dPoints.m: depthInpaint(depthInpaint > 8) = 8
#: ``[1 0 0; 0 0 1; 0 -1 0]``: camera (x right, y down, z forward) -> toolbox (x, z, -y).
FLIP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])




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
    return matmul_fixed(matmul_fixed(FLIP, e), FLIP.T)  # stored in meta_calib: no BLAS rounding (depth.py)


def back_project(depth: np.ndarray, rgb: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with depth as camera-frame points and colours, by open3d, in row-major pixel order.

    Args:
        depth: ``[H, W]`` float32 metres (0 = no depth).
        rgb: ``[H, W, 3]`` uint8.
        k: ``[3, 3]`` K in the toolbox's 1-based pixel convention.

    Returns:
        ``(xyz [P, 3], colour [P, 3])`` float64: camera frame (x right, y down, z forward), colour 0..1.
    """
    import open3d as o3d

    h, w = depth.shape
    # The toolbox's pixel grid starts at 1 (meshgrid(1:W, 1:H)), open3d's at 0: shift the centre by one.
    intrinsic = o3d.camera.PinholeCameraIntrinsic(w, h, k[0, 0], k[1, 1], k[0, 2] - 1.0, k[1, 2] - 1.0)
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(np.ascontiguousarray(rgb)), o3d.geometry.Image(np.ascontiguousarray(depth, np.float32)),
        depth_scale=1.0, depth_trunc=CLIP_M + 1.0, convert_rgb_to_intensity=False)
    cloud = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intrinsic)
    return np.asarray(cloud.points), np.asarray(cloud.colors)


def upright(xyz_camera: np.ndarray, rtilt: np.ndarray) -> np.ndarray:
    """Camera-frame points ``[P, 3]`` -> VoteNet's upright depth frame: ``Rtilt @ FLIP @ p`` per point."""
    # Fixed-order sums, not a BLAS matmul: the stored points must not depend on the BLAS kernel or CPU.
    return apply_matrix(xyz_camera, matmul_fixed(rtilt, FLIP))


def back_project_numpy(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Reference for :func:`back_project`, literally ``read_3d_pts_general.m``: ``[P, 3]`` camera frame."""
    rows, cols = np.nonzero(depth > 0)
    z = depth[rows, cols].astype(np.float64)
    x = (cols + 1 - k[0, 2]) * z / k[0, 0]  # 1-based pixel coordinates, as MATLAB's meshgrid(1:W, 1:H)
    y = (rows + 1 - k[1, 2]) * z / k[1, 1]
    return np.stack([x, y, z], axis=1)
