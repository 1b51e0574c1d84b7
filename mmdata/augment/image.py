"""Image, depth, surface-normal and label-map kernels; one drawn geometry serves all of them.

Pixel grid: pixel ``(row y, column x)`` has its centre at ``(x, y)``; the image centre is
``((W - 1) / 2, (H - 1) / 2)``. Camera frame (OpenCV): x right, y down, z forward, into the scene.

- ``rotate`` by ``angle`` degrees turns the content counter-clockwise as displayed. A content point at
  ``d = p - centre`` moves to ``F d`` with ``F = [[cos, sin], [-sin, cos]]`` (y points down), so an output pixel
  reads the input at ``centre + F^T (p - centre)``. Outside the input reads 0 (invalid depth, zero normal).
- ``crop`` takes the box ``(top, left, height, width)`` (float pixels, same aspect as the image) and resizes
  it back to ``[H, W]``: output pixel ``x`` reads ``left + (x + 0.5) * width / W - 0.5`` (pixel-centre
  aligned, clamped to the border).
- ``flip`` mirrors columns: ``x -> W - 1 - x``.

Images are interpolated bilinearly; depth and label maps by nearest neighbour (a blend of a wall and the
invalid 0 behind an edge is a depth no surface has), and their values are never jittered.

Normals ``n = (nx, ny, nz)`` (float unit vectors, or uint8 encoded ``round((n + 1) * 127.5)``) are
directions in the camera frame, so the geometry acts on them as well as on their pixel positions:

- An in-plane rotation of the image by ``F`` is the scene turned about the optical axis by
  ``R = [[F, 0], [0, 1]]`` (the projection ``(f X / Z, f Y / Z)`` is linear in ``(X, Y)`` at fixed ``Z``;
  exact for the principal point at the centre and ``fx == fy``). Normals turn with it:
  ``n' = (cos nx + sin ny, -sin nx + cos ny, nz)``; depth ``Z`` is unchanged.
- A horizontal flip mirrors the scene ``X -> -X``, so ``n' = (-nx, ny, nz)`` (uint8: ``255 - v``).
- A crop-and-resize is a change of intrinsics (zoom, shifted principal point); camera-frame normals and depth
  values stay as they are. Interpolated normals are renormalised to unit length (zero stays zero).
"""
from __future__ import annotations

import math

import numpy as np

from mmdata.augment.base import Op, add_noise, draw_noise, restore, symmetric, to_float, value_range

MAX_ANGLE = 45.0  # rotation in degrees at strength 1 (TupleInfoNCE found 40 best for NYUv2 RGB)
MIN_AREA = 0.5  # a crop keeps at least this fraction of the area at strength 1
FLIP_P = 0.5  # probability of a horizontal flip at strength 1
MAX_JITTER = 0.4  # brightness, contrast and saturation factors in 1 +- 0.4 at strength 1
MAX_NOISE = 0.1  # Gaussian std as a fraction of the value range at strength 1
EPS = 1e-6


def rotation_coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``(xs, ys)`` float64 ``[H, W]`` of a rotation by ``angle`` degrees."""
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    dx = np.arange(w, dtype=np.float64)[None, :] - cx
    dy = np.arange(h, dtype=np.float64)[:, None] - cy
    return cx + c * dx - s * dy, cy + s * dx + c * dy


def crop_coords(h: int, w: int, box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``(xs, ys)`` float64 ``[H, W]`` of a crop box resized back to ``[H, W]``."""
    top, left, bh, bw = box
    xs = np.clip(left + (np.arange(w, dtype=np.float64) + 0.5) * (bw / w) - 0.5, 0, w - 1)
    ys = np.clip(top + (np.arange(h, dtype=np.float64) + 0.5) * (bh / h) - 0.5, 0, h - 1)
    return np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))


def sample_grid(value: np.ndarray, xs: np.ndarray, ys: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """Read ``value`` ``[H, W, ...]`` at float source coordinates ``xs, ys`` ``[H', W']``; outside reads 0.

    Returns:
        ``[H', W', ...]``: float32 (bilinear) or ``value``'s dtype (nearest, ``floor(x + 0.5)``).
    """
    h, w = value.shape[:2]
    # A one-pixel zero border: every index clipped to [-1, W] reads 0 outside, with no validity masks.
    padded = np.zeros((h + 2, w + 2, int(np.prod(value.shape[2:], dtype=np.int64))), value.dtype)
    padded[1:-1, 1:-1] = value.reshape(h, w, -1)
    flat = padded.reshape((h + 2) * (w + 2), -1)

    def read(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        return flat.take((np.clip(yi, -1, h) + 1) * (w + 2) + np.clip(xi, -1, w) + 1, axis=0)

    if nearest:
        out = read(np.floor(ys + 0.5).astype(np.int64), np.floor(xs + 0.5).astype(np.int64))
        return out.reshape(xs.shape + value.shape[2:])
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0).astype(np.float32), (ys - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    flat = flat.astype(np.float32, copy=False)
    out = np.zeros(xs.shape + flat.shape[1:], np.float32)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        out += read(y0 + dy, x0 + dx) * ((fx if dx else 1 - fx) * (fy if dy else 1 - fy))[..., None]
    return out.reshape(xs.shape + value.shape[2:])


def _is_full(box: tuple[float, ...], h: int, w: int) -> bool:
    return tuple(float(b) for b in box) == (0.0, 0.0, float(h), float(w))


def rotate_image(value: np.ndarray, *, angle: float) -> np.ndarray:
    """Rotate ``[H, W]`` or ``[H, W, C]`` by ``angle`` degrees counter-clockwise (bilinear, zero fill)."""
    if angle == 0:
        return np.array(value, copy=True)
    return restore(sample_grid(value, *rotation_coords(*value.shape[:2], angle)), value)


def crop_image(value: np.ndarray, *, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop ``box = (top, left, height, width)`` from ``[H, W(, C)]`` and resize it back (bilinear)."""
    if _is_full(box, *value.shape[:2]):
        return np.array(value, copy=True)
    return restore(sample_grid(value, *crop_coords(*value.shape[:2], box)), value)


def flip_image(value: np.ndarray, *, flip: bool) -> np.ndarray:
    """Mirror the columns of ``[H, W, ...]`` when ``flip`` (a copy either way)."""
    return np.array(value[:, ::-1] if flip else value, copy=True)


def _gray(x: np.ndarray) -> np.ndarray:
    """Luma ``[H, W]`` of ``[H, W]`` or RGB ``[H, W, 3]`` (ITU-R 601 weights, as PIL and torchvision)."""
    if x.ndim == 2:
        return x
    if x.shape[2] != 3:
        return x.mean(axis=2)
    return np.float32(0.299) * x[..., 0] + np.float32(0.587) * x[..., 1] + np.float32(0.114) * x[..., 2]


def jitter_image(value: np.ndarray, *, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Colour jitter of ``[H, W]`` or ``[H, W, C]``: scale, then contrast about the mean luma, then saturation.

    Integer images are mapped to [0, 1], jittered, clipped and mapped back; float images are not clipped
    (their range is the corpus's: AV-MNIST reconstructions leave 0..1 slightly).
    """
    if brightness == 1 and contrast == 1 and saturation == 1:
        return np.array(value, copy=True)
    integer = np.issubdtype(value.dtype, np.integer)
    top = float(np.iinfo(value.dtype).max) if integer else 1.0
    x = to_float(value) / np.float32(top) * np.float32(brightness)
    mean = np.float32(_gray(x).mean())
    x = (x - mean) * np.float32(contrast) + mean
    if x.ndim == 3 and x.shape[2] == 3:
        gray = _gray(x)[..., None]
        x = gray + (x - gray) * np.float32(saturation)
    if integer:
        x = np.clip(x, 0, 1)
    return restore(x * np.float32(top), value)


def noise_image(value: np.ndarray, *, std: float, noise: np.ndarray) -> np.ndarray:
    """Add ``std * range * noise`` (range: 255 for uint8, max - min for floats); any shape."""
    if std == 0:
        return np.array(value, copy=True)
    return add_noise(value, std * value_range(value), noise)


def rotate_depth(value: np.ndarray, *, angle: float) -> np.ndarray:
    """Rotate a depth or label map ``[H, W]`` (nearest, 0 = invalid outside); values unchanged."""
    if np.ndim(value) < 2:
        return value  # a scalar label: immutable, passes through
    if angle == 0:
        return np.array(value, copy=True)
    return sample_grid(value, *rotation_coords(*value.shape[:2], angle), nearest=True)


def crop_depth(value: np.ndarray, *, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop-and-resize a depth or label map ``[H, W]`` by nearest neighbour; values unchanged."""
    if np.ndim(value) < 2:
        return value
    if _is_full(box, *value.shape[:2]):
        return np.array(value, copy=True)
    return sample_grid(value, *crop_coords(*value.shape[:2], box), nearest=True)


def flip_depth(value: np.ndarray, *, flip: bool) -> np.ndarray:
    """Mirror a depth or label map ``[H, W]``; scalar labels pass through."""
    return value if np.ndim(value) < 2 else flip_image(value, flip=flip)


def _decode_normals(value: np.ndarray) -> np.ndarray:
    if value.ndim != 3 or value.shape[2] != 3:
        raise ValueError(f"a normal map is [H, W, 3], got {value.shape}")
    if value.dtype == np.uint8:
        return value.astype(np.float32) / np.float32(127.5) - np.float32(1)
    return to_float(value)


def _encode_normals(n: np.ndarray, like: np.ndarray) -> np.ndarray:
    return restore((n + np.float32(1)) * np.float32(127.5), like) if like.dtype == np.uint8 else restore(n, like)


def unit_normals(n: np.ndarray) -> np.ndarray:
    """Normalise ``[H, W, 3]`` vectors to unit length; vectors shorter than EPS become zero (no NaN)."""
    norm = np.sqrt(n[..., 0] * n[..., 0] + n[..., 1] * n[..., 1] + n[..., 2] * n[..., 2])[..., None]
    return np.where(norm > EPS, n / np.maximum(norm, np.float32(EPS)), np.float32(0))


def rotate_normal(value: np.ndarray, *, angle: float) -> np.ndarray:
    """Rotate a normal map ``[H, W, 3]``: resample the pixels and turn the vectors by the same angle."""
    if angle == 0:
        return np.array(value, copy=True)
    n = sample_grid(_decode_normals(value), *rotation_coords(*value.shape[:2], angle))
    theta = math.radians(angle)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    turned = np.stack([c * n[..., 0] + s * n[..., 1], c * n[..., 1] - s * n[..., 0], n[..., 2]], axis=-1)
    return _encode_normals(unit_normals(turned), value)


def crop_normal(value: np.ndarray, *, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop-and-resize a normal map ``[H, W, 3]`` (bilinear, renormalised; vectors unchanged otherwise)."""
    if _is_full(box, *value.shape[:2]):
        return np.array(value, copy=True)
    n = sample_grid(_decode_normals(value), *crop_coords(*value.shape[:2], box))
    return _encode_normals(unit_normals(n), value)


def flip_normal(value: np.ndarray, *, flip: bool) -> np.ndarray:
    """Mirror a normal map ``[H, W, 3]`` and negate the x components."""
    _decode_normals(value)  # shape check
    out = flip_image(value, flip=flip)
    if flip:
        out[..., 0] = 255 - out[..., 0] if value.dtype == np.uint8 else -out[..., 0]
    return out


def draw_rotate(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``angle`` uniform in ``+- strength * MAX_ANGLE`` degrees."""
    return {"angle": strength * MAX_ANGLE * symmetric(rng)}


def crop_box(rng: np.random.Generator, strength: float, h: int, w: int) -> tuple[float, float, float, float]:
    """A box keeping an area fraction uniform in ``[1 - strength * (1 - MIN_AREA), 1]``, same aspect."""
    side = math.sqrt(1.0 - (1.0 - MIN_AREA) * strength * rng.random())
    fy, fx = rng.random(), rng.random()
    # Positions are fractions of the free margin, so fields of different resolution get the same box.
    return (fy * (h - side * h), fx * (w - side * w), side * h, side * w)


def draw_crop(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``box`` from :func:`crop_box` on the value's ``[H, W]`` (an empty box for scalar labels)."""
    shape = np.shape(value)
    return {"box": crop_box(rng, strength, *shape[:2]) if len(shape) >= 2 else (0.0, 0.0, 0.0, 0.0)}


def draw_flip(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``flip`` with probability ``strength * FLIP_P``."""
    return {"flip": bool(rng.random() < FLIP_P * strength)}


def draw_jitter(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """Brightness, contrast and saturation factors uniform in ``1 +- strength * MAX_JITTER``."""
    return {name: 1.0 + strength * MAX_JITTER * symmetric(rng) for name in ("brightness", "contrast", "saturation")}


def draw_noise_image(rng: np.random.Generator, strength: float, value: np.ndarray, ctx: dict) -> dict:
    """``std = strength * MAX_NOISE`` (of the range) and a standard-normal field."""
    return draw_noise(rng, strength, value, MAX_NOISE)


OPS: dict[str, Op] = {
    "rotate_image": Op(rotate_image, draw_rotate, "geometry"),
    "crop_image": Op(crop_image, draw_crop, "geometry"),
    "flip_image": Op(flip_image, draw_flip, "geometry"),
    "jitter_image": Op(jitter_image, draw_jitter),
    "noise_image": Op(noise_image, draw_noise_image),
    "rotate_depth": Op(rotate_depth, draw_rotate, "geometry"),
    "crop_depth": Op(crop_depth, draw_crop, "geometry"),
    "flip_depth": Op(flip_depth, draw_flip, "geometry"),
    "rotate_normal": Op(rotate_normal, draw_rotate, "geometry"),
    "crop_normal": Op(crop_normal, draw_crop, "geometry"),
    "flip_normal": Op(flip_normal, draw_flip, "geometry"),
    # Segmentation maps follow the image geometry by nearest neighbour; scalar labels pass through.
    "rotate_label": Op(rotate_depth, draw_rotate, "geometry"),
    "crop_label": Op(crop_depth, draw_crop, "geometry"),
    "flip_label": Op(flip_depth, draw_flip, "geometry"),
}
