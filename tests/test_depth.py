"""Depth helpers: millimetre conversion, back-projection in both pixel conventions against the toolboxes'
formulas, and open3d normals against analytic scenes."""
from __future__ import annotations

import numpy as np
import pytest

from mmdata.modalities.depth import (NYU_RGB, Intrinsics, angular_error, back_project, decode_normals,
                                     encode_normals, estimate_normals, to_millimetres)

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
    points = back_project(depth, NYU_RGB, convention="opencv")
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
    points = back_project(np.full((HEIGHT, WIDTH), 2.0), NYU_RGB, convention="opencv")
    np.testing.assert_allclose(points[..., 2], 2.0)
    np.testing.assert_allclose(points[0, 0, :2] / 2.0, _rays()[0, 0, :2])


# --- the two pixel conventions against the toolboxes' formulas ---


def _depth_and_camera(height: int = 48, width: int = 64) -> tuple[np.ndarray, Intrinsics]:
    """A float32 depth map with holes (as decoded from a PNG) and a camera of odd, non-integer intrinsics."""
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 8.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.2] = 0.0
    return depth, Intrinsics(57.3171, 58.1097, 31.6573, 24.2219, width, height)


def test_matlab_convention_is_both_toolboxes_formula_bit_for_bit():
    """SUN RGB-D's ``read_3d_pts_general.m`` and NYU's ``depth_plane2depth_world.m`` are the same lines::

        [x, y] = meshgrid(1:W, 1:H);  X = (x - cx) .* z / fx;  Y = (y - cy) .* z / fy;  Z = z
    """
    depth, k = _depth_and_camera()
    x, y = np.meshgrid(np.arange(1, k.width + 1), np.arange(1, k.height + 1))
    z = depth.astype(np.float64)
    toolbox = np.stack([(x - k.cx) * z / k.fx, (y - k.cy) * z / k.fy, z], axis=-1)
    np.testing.assert_array_equal(back_project(depth, k, convention="matlab"), toolbox)
    matrix = np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]])
    assert Intrinsics.from_matrix(matrix, k.height, k.width) == k


def test_matlab_convention_is_open3d_with_the_principal_point_one_pixel_back():
    """open3d counts pixels from 0, so the toolbox's K goes in with ``cx - 1``, ``cy - 1`` (SUN RGB-D's reader
    back-projected with open3d before there was one function: the same bits, holes dropped in row-major order)."""
    import open3d as o3d

    depth, k = _depth_and_camera()
    camera = o3d.camera.PinholeCameraIntrinsic(k.width, k.height, k.fx, k.fy, k.cx - 1.0, k.cy - 1.0)
    cloud = o3d.geometry.PointCloud.create_from_depth_image(o3d.geometry.Image(depth), camera, depth_scale=1.0,
                                                            depth_trunc=100.0)
    np.testing.assert_array_equal(back_project(depth, k, convention="matlab")[depth > 0], np.asarray(cloud.points))


def test_opencv_convention_is_the_normalised_ray_times_depth():
    """OpenCV (and Bouguet's calibration toolbox, where NYU's camera_params.m come from) puts the first pixel's
    centre at 0: ``cv2.undistortPoints`` without distortion gives the ray ``(u - cx) / fx``, scaled by z."""
    import cv2

    depth, k = _depth_and_camera()
    v, u = np.mgrid[0:k.height, 0:k.width].astype(np.float64)
    z = depth.astype(np.float64)
    points = back_project(depth, k, convention="opencv")
    np.testing.assert_array_equal(points, np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=-1))
    matrix = np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]])
    rays = cv2.undistortPoints(np.stack([u, v], axis=-1).reshape(-1, 1, 2), matrix, None).reshape(k.height, k.width, 2)
    np.testing.assert_allclose(points[..., :2], rays * z[..., None], rtol=1e-6, atol=1e-9)


def test_the_conventions_differ_by_one_pixel_of_principal_point():
    depth, k = _depth_and_camera()
    shifted = Intrinsics(k.fx, k.fy, k.cx + 1.0, k.cy + 1.0, k.width, k.height)
    np.testing.assert_allclose(back_project(depth, k, convention="opencv"),
                               back_project(depth, shifted, convention="matlab"), rtol=1e-12, atol=1e-12)
    assert not np.allclose(back_project(depth, k, convention="opencv"), back_project(depth, k, convention="matlab"))
    with pytest.raises(ValueError, match="convention"):
        back_project(depth, k, convention="nyu")
