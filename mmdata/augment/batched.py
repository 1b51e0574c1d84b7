"""Batched torch forms of the kernels, for collated batches on any device (design section 5).

:func:`augment_batch` draws every sample's parameters exactly as the per-sample hook does (the same
:meth:`~mmdata.augment.Augmenter.draw` from the same ``make_rng(seed, "augment", epoch, key)``), then applies
one batched kernel per op: the result equals collating the per-sample results. Equality is to float32
rounding: both forms run the same arithmetic in the same order (float64 coordinates, float32 blending), so
on CPU they agree bit for bit except reductions (jitter's mean luma) whose summation order differs; uint8
outputs may then differ by one level. Ops without a batched form run the numpy kernel row by row.

Where it pays: on an accelerator. Resampling (rotate, crop), colour jitter and masks are per-pixel work with
a few scalars per sample, which a GPU does for the whole batch in one pass. On CPU it does not pay (measured
by bench/augment.py, one thread: 0.75x the hook's time on AV-MNIST batches, about 2x slower at 240 x 320,
where numpy's per-image gathers beat torch's index_select): keep the per-sample hook in the workers there.
Either way the per-sample parameter draws stay on the CPU and are the floor of the cost (about half of it on
AV-MNIST): noise takes its standard-normal field from the draw, which is what makes it reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmdata.augment import KERNELS, OPS
from mmdata.augment import tensor as T
from mmdata.augment.augmenter import Augmenter
from mmdata.augment.tensor import BatchedKernel, Tensor
from mmdata.rng import make_rng


def loader_rngs(keys: Sequence[str], *, seed: int, epoch: int = 0) -> list[np.random.Generator]:
    """The generators :func:`mmdata.load` hands its ``augment`` hook for these sample keys."""
    return [make_rng(seed, "augment", epoch, key) for key in keys]


#: Kernel name -> batched torch form; kernels not listed run the numpy form row by row.
BATCHED: dict[str, BatchedKernel] = {
    **{f"rotate_{m}": T.geometric(T.rotation_coords, m != "image") for m in ("image", "depth", "label")},
    **{f"crop_{m}": T.geometric(T.crop_coords, m != "image") for m in ("image", "depth", "label")},
    **{f"flip_{m}": T.flip(2) for m in ("image", "depth", "label")},
    "jitter_image": T.jitter_image, "noise_image": T.noise_range,
    "rotate_normal": T.normals(T.rotation_coords, True), "crop_normal": T.normals(T.crop_coords, False),
    "flip_normal": T.flip(2, negate_x=True),
    "shift_audio": T.shift_audio, "gain_audio": T.gain_audio, "noise_audio": T.noise_range,
    "timemask_audio": T.mask(-1), "freqmask_audio": T.mask(-2),
    "crop_video": T.geometric(T.crop_coords, False, frames=True), "flip_video": T.flip(3), "noise_video": T.noise_range,
    "noise_feat": T.noise_dims, "timemask_feat": T.mask(0), "noise_series": T.noise_dims,
}


def augment_batch(augmenter: Augmenter, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
    """Augment a collated batch (see :func:`mmdata.shards.collate.collate`) as the per-sample hook would.

    Args:
        augmenter: the policy; the same object the workers would call.
        batch: ``__key__`` list plus tensors ``[B, ...]`` (any device; padded fields with ``<field>_lengths``)
            or lists of str.
        rngs: one generator per row, made as the loader makes them (:func:`loader_rngs`).

    Returns:
        A new batch dict; fields without ops are the same objects.

    Raises:
        ValueError: a temporal crop in the policy (it changes lengths: apply it per sample in the workers).
    """
    keys = batch["__key__"]
    if len(rngs) != len(keys):
        raise ValueError(f"{len(rngs)} generators for a batch of {len(keys)}")
    aux = {f"{name}_{suffix}" for name in batch for suffix in ("lengths", "mask")}
    names = [n for n in batch if n != "__key__" and n not in aux and augmenter.ops_for(n)]
    plans = [augmenter.draw(_proxy(batch, names, row), rng) for row, rng in enumerate(rngs)]
    out = dict(batch)
    for name in names:
        steps = [plan.get(name) for plan in plans]
        if any(s is not None for s in steps):
            out[name] = _apply_steps(batch[name], steps, batch.get(f"{name}_lengths"))
    return out


def _proxy(batch: dict[str, Any], names: list[str], row: int) -> dict[str, Any]:
    """A shape-only stand-in for sample ``row``: draws read shapes and dtypes, never values."""
    sample: dict[str, Any] = {"__key__": batch["__key__"][row]}
    for name in names:
        value = batch[name]
        if isinstance(value, list):
            sample[name] = value[row]
            continue
        shape = tuple(value.shape[1:])
        if f"{name}_lengths" in batch:
            shape = (int(batch[f"{name}_lengths"][row]),) + shape[1:]
        dtype = torch.empty((), dtype=value.dtype).numpy().dtype
        sample[name] = np.broadcast_to(np.zeros((), dtype), shape)
    return sample


def _apply_steps(x: Any, steps: list, lengths: Tensor | None) -> Any:
    """Apply op ``i`` of every row at once, for each op of the field's policy in order."""
    for i in range(len(next(s for s in steps if s is not None))):
        rows = [b for b, s in enumerate(steps) if s is not None and s[i] is not None]
        if not rows:
            continue
        kernel, params = steps[rows[0]][i][0], [steps[b][i][1] for b in rows]
        if OPS[kernel].changes_length and isinstance(x, Tensor):
            raise ValueError(f"{kernel} changes lengths; apply it per sample (mmdata.load(augment=...))")
        if kernel not in BATCHED or not isinstance(x, Tensor):
            x = _per_row(x, kernel, rows, params, lengths)
        elif len(rows) == len(steps):
            x = BATCHED[kernel](x, params, lengths)
        else:
            index = torch.tensor(rows, device=x.device)
            x = x.clone()  # never write into the caller's batch
            x[index] = BATCHED[kernel](x[index], params, None if lengths is None else lengths[index.cpu()])
    return x


def _per_row(x: Any, kernel: str, rows: list[int], params: list[dict], lengths: Tensor | None) -> Any:
    """The numpy kernel row by row (text lists, ops without a batched form)."""
    if isinstance(x, list):
        out = list(x)
        for row, p in zip(rows, params):
            out[row] = KERNELS[kernel](x[row], **p)
        return out
    out = x.clone()
    for row, p in zip(rows, params):
        part = slice(0, int(lengths[row])) if lengths is not None else slice(None)
        value = KERNELS[kernel](x[row, part].cpu().numpy(), **p)
        out[row, part] = torch.from_numpy(np.ascontiguousarray(value)).to(x.device)
    return out
