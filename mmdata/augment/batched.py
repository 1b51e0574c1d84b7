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
:class:`DeviceAugmented` wraps a loader built without ``augment`` so that each batch moves to the training
device and is augmented there (a run's ``augment: {batched: true}``); temporal crops cannot be batched and are
refused when it is built (:func:`check_batchable`).
Either way the per-sample parameter draws stay on the CPU and are the floor of the cost (about half of it on
AV-MNIST): noise takes its standard-normal field from the draw, which is what makes it reproducible.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
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


#: Integer dtypes torch cannot resample on CPU (no uint16 flip or gather there): widened for geometric ops only,
#: which move values without arithmetic, so narrowing back is exact.
_WIDER = {torch.uint16: torch.int32, torch.uint32: torch.int64}


def unbatchable(augmenter: Augmenter, features: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, kernel)`` pairs of the policy that :func:`augment_batch` cannot apply: kernels that change a
    tensor's length (temporal crops); text's word dropout changes a list entry and is fine.

    Args:
        augmenter: the policy.
        features: field name -> :class:`~mmdata.types.Field` of the fields the batches carry.
    """
    return [(name, kernel) for name, spec in features.items() if spec.dtype != "str"
            for kernel in augmenter.ops_for(name) if OPS[kernel].changes_length]


def check_batchable(augmenter: Augmenter, features: dict[str, Any]) -> None:
    """Raise ValueError naming every field and op :func:`augment_batch` cannot apply (see :func:`unbatchable`)."""
    refused = unbatchable(augmenter, features)
    if refused:
        named = ", ".join(f"{kernel} on {name!r}" for name, kernel in refused)
        raise ValueError(f"batched augmentation cannot apply {named}: it changes the tensor's length, and the rows "
                         f"of a batch share one; drop the op from the policy or augment per sample in the workers")


def augment_on(augmenter: Augmenter, batch: dict[str, Any], rngs: Sequence[np.random.Generator],
               device: torch.device) -> dict[str, Any]:
    """Move a collated batch to ``device`` and :func:`augment_batch` it there.

    Args:
        augmenter, rngs: as for :func:`augment_batch`.
        batch: ``__key__`` plus tensors ``[B, ...]`` on any device (lists of str stay lists).
        device: where every tensor of the result lies.

    Returns:
        The augmented batch, dtypes kept (uint16 maps are widened for the geometric ops only and narrowed back).
    """
    lengths = {k for k in batch if k.endswith("_lengths")}  # kept on the CPU while drawing: read per row
    moved = {k: v.to(device) if isinstance(v, Tensor) and k not in lengths else v for k, v in batch.items()}
    wide = {k: v.to(_WIDER[v.dtype]) for k, v in moved.items() if isinstance(v, Tensor) and v.dtype in _WIDER
            and augmenter.ops_for(k) and all(OPS[n].group == "geometry" for n in augmenter.ops_for(k))}
    out = augment_batch(augmenter, {**moved, **wide}, rngs)
    out.update({k: out[k].to(moved[k].dtype) for k in wide})
    out.update({k: batch[k].to(device) for k in lengths})
    return out


class DeviceAugmented:
    """A loader's batches moved to ``device`` and augmented there: the batched form of ``mmdata.load(augment=)``.

    Iterating yields the loader's (unaugmented) batches through :func:`augment_on`, each row drawn from
    :func:`loader_rngs` with the loader's seed and current epoch: the batches a per-sample loader with the
    same seed would yield, to float32 rounding (see :func:`augment_batch`). Everything else (``set_epoch``,
    ``len``, ``shards``, ``state_dict``, ...) is the loader's.

    Args:
        loader: a :class:`mmdata.shards.read.Loader` (or anything with ``seed``, ``epoch``, ``features``) built
            without ``augment``.
        augmenter: the policy.
        device: where the batches go (the training device).

    Raises:
        ValueError: the loader augments already, or the policy has an op that changes lengths on a tensor field.
    """

    def __init__(self, loader: Any, augmenter: Augmenter, device: str | torch.device) -> None:
        if getattr(loader, "augment", None) is not None:
            raise ValueError("the loader already augments per sample: build it without augment=")
        check_batchable(augmenter, loader.features)
        self.loader, self.augmenter, self.device = loader, augmenter, torch.device(device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration: its shuffle and its augmentation draws."""
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Seed and epoch are read now, as the loader reads them when its iteration starts.
        seed, epoch = self.loader.seed, self.loader.epoch
        return (augment_on(self.augmenter, batch, loader_rngs(batch["__key__"], seed=seed, epoch=epoch), self.device)
                for batch in self.loader)

    def __getattr__(self, name: str) -> Any:  # shards, features, state_dict, ...: the loader's
        return getattr(self.__dict__["loader"], name)
