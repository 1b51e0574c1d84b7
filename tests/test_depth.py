"""Depth helpers: millimetre conversion, back-projection, and open3d normals against analytic scenes."""
from __future__ import annotations

import numpy as np
import pytest

from mmdata.modalities.depth import (NYU_RGB, Intrinsics, angular_error, backproject, decode_normals, encode_normals,
                          estimate_normals, to_millimetres)

HEIGHT, WIDTH = 60, 80  # the synthetic mini's frame size; intrinsics are NYU's RGB camera scaled to it


def _rays(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    k = NYU_RGB.scaled(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)  # z = 1


def _render(planes: list[tuple[tuple[float, float, float], float, object]], height: int = HEIGHT,
            width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast planes ``n . p = c`` (optionally bounded by ``inside(p)``): depth [H, W] and true normals."""
    rays = _rays(height, width)
    depth, normals = np.full((height, width), np.inf), np.zeros((height, width, 3))
    for normal, offset, inside in planes:
        n = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = offset / (rays @ n)
        hit = np.isfinite(t) & (t > 0)
        if inside is not None:
            hit &= inside(rays * np.where(hit, t, 0)[..., None])
        closer = hit & (t < depth)
        depth = np.where(closer, t, depth)
        facing = -n if offset > 0 else n  # towards the camera at the origin
        normals[closer] = facing
    return depth, normals


def _box_scene(height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """A wall 3 m ahead, a floor 1.2 m below and a 0.8 x 0.9 x 0.6 m box on the floor (front and top visible)."""
    def front(p):
        return (p[..., 0] > -0.5) & (p[..., 0] < 0.3) & (p[..., 1] > 0.3) & (p[..., 1] < 1.2)

    def top(p):
        return (p[..., 0] > -0.5) & (p[..., 0] < 0.3) & (p[..., 2] > 2.0) & (p[..., 2] < 2.6)

    return _render([((0, 0, 1), 3.0, None), ((0, 1, 0), 1.2, None), ((0, 0, 1), 2.0, front),
                    ((0, 1, 0), 0.3, top)], height, width)


def _stored(depth: np.ndarray) -> np.ndarray:
    """Depth as the shards hold it: uint16 millimetres, back in metres."""
    return to_millimetres(depth)[0] / 1000.0


def test_plane_normals_match_analytic_within_5_degrees():
    depth, truth = _render([((0.2, -0.5, 1.0), 2.0, None)])  # a tilted plane in front of the camera
    assert np.isfinite(depth).all()
    error = angular_error(estimate_normals(_stored(depth), NYU_RGB), truth)
    assert error.mean() < 5.0 and error.mean() < 1.0  # measured 0.1 deg


@pytest.mark.parametrize("size", [(HEIGHT, WIDTH), (120, 160)])
def test_box_scene_normals_match_analytic_within_5_degrees(size):
    depth, truth = _box_scene(*size)
    normals = estimate_normals(_stored(depth), NYU_RGB)
    error = angular_error(normals, truth)
    assert error.mean() < 5.0  # measured ~0.8 deg at 60 x 80; the error sits on the box edges
    assert np.median(error) < 0.5


def test_normals_face_the_camera_and_are_unit_length():
    depth, _ = _box_scene()
    normals = estimate_normals(depth, NYU_RGB)
    points = backproject(depth, NYU_RGB)
    assert np.all(np.einsum("hwc,hwc->hw", normals, points) < 0)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-6)


def test_pixels_without_depth_get_no_normal():
    depth, _ = _box_scene()
    depth[:10] = 0.0
    depth[20, 20] = np.nan
    normals = estimate_normals(depth, NYU_RGB)
    assert not normals[:10].any() and not normals[20, 20].any()
    assert not estimate_normals(np.zeros((6, 8)), NYU_RGB).any()


def test_normals_encoding_round_trip_and_no_normal_code():
    depth, truth = _box_scene()
    encoded = encode_normals(truth)
    assert encoded.dtype == np.uint8 and angular_error(decode_normals(encoded), truth).max() < 0.5
    assert encode_normals(np.zeros((1, 1, 3))).tolist() == [[[128, 128, 128]]]
    assert np.linalg.norm(decode_normals(np.full(3, 128, np.uint8))) < 0.01


def test_to_millimetres_zeroes_and_counts_invalid_values():
    millimetres, bad = to_millimetres(np.array([[1.2345, 0.0, np.nan], [-1.0, 70.0, np.inf]]))
    assert millimetres.dtype == np.uint16 and millimetres.tolist() == [[1234, 0, 0], [0, 0, 0]]
    assert bad == 4  # nan, negative, beyond 65.535 m, inf; the sensor's own 0 is not counted


def test_intrinsics_scale_and_backprojection():
    k = Intrinsics(100.0, 200.0, 50.0, 40.0, 100, 80).scaled(40, 50)
    assert (k.fx, k.fy, k.cx, k.cy, k.height, k.width) == (50.0, 100.0, 25.0, 20.0, 40, 50)
    points = backproject(np.full((HEIGHT, WIDTH), 2.0), NYU_RGB)
    np.testing.assert_allclose(points[..., 2], 2.0)
    np.testing.assert_allclose(points[0, 0, :2] / 2.0, _rays()[0, 0, :2])
