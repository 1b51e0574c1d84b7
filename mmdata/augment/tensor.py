"""Torch forms of the augment kernels on batches ``[B, ...]`` (any device); the registry is in batched.py.

Each function takes the batch tensor, the rows' parameter dicts (exactly what the numpy kernel takes) and the
rows' lengths for padded fields, and repeats the numpy kernel's arithmetic in the same order: float64
coordinates, float32 blending, integers rounded half-to-even and clipped.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

Tensor = torch.Tensor
BatchedKernel = Callable[[Tensor, list[dict], "Tensor | None"], Tensor]


def _restore(out: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype.is_floating_point:
        return out.to(dtype)
    info = torch.iinfo(dtype)
    return out.round().clamp(info.min, info.max).to(dtype)


def _column(params: list[dict], name: str, x: Tensor, dims: int, dtype=torch.float64) -> Tensor:
    """Per-row scalar parameter ``[B, 1, ..., 1]`` (``dims`` trailing ones)."""
    values = torch.tensor([float(p[name]) for p in params], dtype=dtype, device=x.device)
    return values.reshape(-1, *([1] * dims))


def _sample(x: Tensor, xs: Tensor, ys: Tensor, nearest: bool) -> Tensor:
    """Batched :func:`~mmdata.augment.image.sample_grid`: ``x [B, H, W, K]``, coordinates ``[B, H', W']``."""
    b, h, w, k = x.shape
    padded = torch.zeros(b, h + 2, w + 2, k, dtype=x.dtype if nearest else torch.float32, device=x.device)
    padded[:, 1:-1, 1:-1] = x  # the same zero border as the numpy kernel
    flat = padded.reshape(-1, k)
    first = (torch.arange(b, device=x.device) * ((h + 2) * (w + 2))).reshape(b, 1, 1)

    def read(yi: Tensor, xi: Tensor) -> Tensor:
        index = first + (yi.clamp(-1, h) + 1) * (w + 2) + xi.clamp(-1, w) + 1
        return flat.index_select(0, index.reshape(-1)).reshape(*xs.shape, k)

    if nearest:
        return read(torch.floor(ys + 0.5).long(), torch.floor(xs + 0.5).long())
    x0, y0 = torch.floor(xs), torch.floor(ys)
    fx, fy = (xs - x0).float(), (ys - y0).float()
    x0, y0 = x0.long(), y0.long()
    out = torch.zeros(*xs.shape, k, dtype=torch.float32, device=x.device)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        out += read(y0 + dy, x0 + dx) * weight[..., None]
    return out


def rotation_coords(params: list[dict], h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-row source coordinates ``[B, H, W]`` (float64) of :func:`~mmdata.augment.image.rotation_coords`."""
    theta = [math.radians(p["angle"]) for p in params]
    c = torch.tensor([math.cos(t) for t in theta], dtype=torch.float64, device=device)[:, None, None]
    s = torch.tensor([math.sin(t) for t in theta], dtype=torch.float64, device=device)[:, None, None]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    dx = torch.arange(w, dtype=torch.float64, device=device)[None, None, :] - cx
    dy = torch.arange(h, dtype=torch.float64, device=device)[None, :, None] - cy
    return cx + c * dx - s * dy, cy + s * dx + c * dy


def crop_coords(params: list[dict], h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-row source coordinates ``[B, H, W]`` (float64) of :func:`~mmdata.augment.image.crop_coords`."""
    box = torch.tensor([p["box"] for p in params], dtype=torch.float64, device=device)
    top, left, bh, bw = (box[:, i:i + 1] for i in range(4))
    xs = torch.clamp(left + (torch.arange(w, dtype=torch.float64, device=device) + 0.5) * (bw / w) - 0.5, 0, w - 1)
    ys = torch.clamp(top + (torch.arange(h, dtype=torch.float64, device=device) + 0.5) * (bh / h) - 0.5, 0, h - 1)
    return xs[:, None, :].expand(-1, h, -1), ys[:, :, None].expand(-1, -1, w)


def geometric(coords: Callable, nearest: bool, frames: bool = False) -> BatchedKernel:
    """A batched resampling kernel for ``[B, H, W(, C)]`` (or video ``[B, T, H, W(, C)]`` when ``frames``)."""

    def kernel(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
        if x.dim() < 3:
            return x  # scalar labels pass through
        moved = x.movedim(1, 3) if frames else x  # frames ride along as channels, as in video.crop_video
        h, w = moved.shape[1:3]
        out = _sample(moved.reshape(len(x), h, w, -1), *coords(params, h, w, x.device), nearest)
        out = out.reshape(moved.shape)
        out = out.movedim(3, 1) if frames else out
        return out if nearest else _restore(out, x.dtype)
    return kernel


def flip(axis: int, negate_x: bool = False) -> BatchedKernel:
    """Batched flips along ``axis`` of the batch (2: image columns, 3: video columns); scalars pass through."""
    def kernel(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
        if x.dim() < 3:
            return x
        flags = torch.tensor([bool(p["flip"]) for p in params], device=x.device).reshape(-1, *[1] * (x.dim() - 1))
        flipped = x.flip(axis)
        if negate_x:  # normals: x component negated (uint8: 255 - v), as image.flip_normal
            flipped = flipped.clone()
            flipped[..., 0] = 255 - flipped[..., 0] if x.dtype == torch.uint8 else -flipped[..., 0]
        return torch.where(flags, flipped, x)
    return kernel


def _gray(x: Tensor) -> Tensor:
    if x.dim() == 3:
        return x
    if x.shape[-1] != 3:
        return x.mean(dim=-1)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def jitter_image(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
    """Batched :func:`~mmdata.augment.image.jitter_image` on ``[B, H, W(, C)]``."""
    dims = x.dim() - 1
    b, c, s = (_column(params, n, x, dims, torch.float32) for n in ("brightness", "contrast", "saturation"))
    top = 1.0 if x.dtype.is_floating_point else float(torch.iinfo(x.dtype).max)
    y = x.float() / top * b
    mean = _gray(y).mean(dim=(1, 2)).reshape(-1, *[1] * dims)
    y = (y - mean) * c + mean
    if y.dim() == 4 and y.shape[-1] == 3:
        gray = _gray(y)[..., None]
        y = gray + (y - gray) * s
    if not x.dtype.is_floating_point:
        y = y.clamp(0, 1)
    return _restore(y * top, x.dtype)


def _noise_field(params: list[dict], x: Tensor) -> Tensor:
    """The rows' standard-normal fields stacked (zero-padded to the batch's time length)."""
    field = torch.zeros(x.shape, dtype=torch.float32)
    for row, p in enumerate(params):
        noise = torch.from_numpy(np.asarray(p["noise"], dtype=np.float32))
        field[(row, *[slice(0, n) for n in noise.shape])] = noise
    return field.to(x.device)


def noise_range(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
    """Batched ``noise_image`` / ``noise_audio`` / ``noise_video``: std relative to each row's range."""
    dims = x.dim() - 1
    if x.dtype.is_floating_point:
        real = _real_steps(x, lengths)  # padding is not part of a sample's range
        high = torch.where(real, x, torch.full((), -math.inf, device=x.device)).reshape(len(x), -1).amax(dim=1)
        low = torch.where(real, x, torch.full((), math.inf, device=x.device)).reshape(len(x), -1).amin(dim=1)
        span = high.double() - low.double()
        span = torch.where(torch.isfinite(span), span, torch.zeros_like(span))
    else:
        info = torch.iinfo(x.dtype)
        span = torch.full((len(x),), float(info.max) - float(info.min), dtype=torch.float64, device=x.device)
    scale = (_column(params, "std", x, 0) * span).float().reshape(-1, *[1] * dims)
    return _restore(x.float() + scale * _noise_field(params, x), x.dtype)


def _real_steps(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Bool ``[B, T, 1, ...]``: True on the real (unpadded) steps of axis 1."""
    n = lengths.to(x.device) if lengths is not None else torch.full((len(x),), x.shape[1], device=x.device)
    steps = torch.arange(x.shape[1], device=x.device)
    return (steps[None, :] < n[:, None]).reshape(len(x), x.shape[1], *[1] * (x.dim() - 2))


def noise_dims(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
    """Batched ``noise_feat`` / ``noise_series`` on ``[B, T(, D)]``: std relative to each dimension's std."""
    mask = _real_steps(x, lengths)
    count = mask.sum(dim=1, keepdim=True).double().clamp(min=1)
    y = x.double() * mask
    mean = y.sum(dim=1, keepdim=True) / count
    std = torch.sqrt((((y - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count)
    scale = (_column(params, "std", x, x.dim() - 1) * std).float()
    return _restore(x.float() + scale * _noise_field(params, x), x.dtype)


def mask(axis: int) -> BatchedKernel:
    """Batched span masks (time or frequency) along ``axis`` of the per-sample value."""

    def kernel(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
        dim = axis if axis < 0 else axis + 1
        size = x.shape[dim]
        shape = [len(x)] + [1] * (x.dim() - 1)
        shape[dim] = size
        start, width = _column(params, "start", x, 0, torch.long), _column(params, "width", x, 0, torch.long)
        steps = torch.arange(size, device=x.device)[None, :]
        hit = ((steps >= start[:, None]) & (steps < (start + width)[:, None])).reshape(shape)
        return torch.where(hit, torch.zeros((), dtype=x.dtype, device=x.device), x)
    return kernel


def shift_audio(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
    """Batched :func:`~mmdata.augment.audio.shift_audio` on ``[B, ..., T]``."""
    t = x.shape[-1]
    source = torch.arange(t, device=x.device)[None, :] - _column(params, "shift", x, 1, torch.long)
    valid = (source >= 0) & (source < t)
    flat = x.reshape(len(x), -1, t)
    index = source.clamp(0, t - 1)[:, None, :].expand(-1, flat.shape[1], -1)
    out = torch.gather(flat, 2, index) * valid[:, None, :].to(x.dtype)
    return out.reshape(x.shape)


def gain_audio(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
    """Batched :func:`~mmdata.augment.audio.gain_audio`."""
    factor = torch.tensor([10.0 ** (p["gain_db"] / 20.0) for p in params], dtype=torch.float32, device=x.device)
    return _restore(x.float() * factor.reshape(-1, *[1] * (x.dim() - 1)), x.dtype)


def normals(coords: Callable, rotate: bool) -> BatchedKernel:
    """Batched rotate/crop of normal maps ``[B, H, W, 3]`` (see :mod:`mmdata.augment.image`)."""

    def kernel(x: Tensor, params: list[dict], lengths: Tensor | None = None) -> Tensor:
        n = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        n = _sample(n, *coords(params, x.shape[1], x.shape[2], x.device), False)
        if rotate:
            theta = [math.radians(p["angle"]) for p in params]
            c = torch.tensor([math.cos(t) for t in theta], device=x.device).reshape(-1, 1, 1)
            s = torch.tensor([math.sin(t) for t in theta], device=x.device).reshape(-1, 1, 1)
            n = torch.stack([c * n[..., 0] + s * n[..., 1], c * n[..., 1] - s * n[..., 0], n[..., 2]], dim=-1)
        norm = torch.sqrt(n[..., 0] * n[..., 0] + n[..., 1] * n[..., 1] + n[..., 2] * n[..., 2])[..., None]
        n = torch.where(norm > 1e-6, n / norm.clamp(min=1e-6), torch.zeros((), device=x.device))
        return _restore((n + 1) * 127.5, x.dtype) if x.dtype == torch.uint8 else _restore(n, x.dtype)
    return kernel
