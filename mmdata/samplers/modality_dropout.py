"""Modality dropout (TupleInfoNCE supplementary H): mask out modalities and fill them with placeholders.

The paper's rule: the missing modalities are the **same in the positive and all its negatives** (they may
differ in the anchor), and dropout is applied to a batch with probability 0.6, complete inputs otherwise.
So one mask row ``[M]`` per anchor is drawn here and applied to the positive batch (:func:`drop_batch`) and to
every negative of that anchor (:func:`drop_tuples`); draw a second, independent mask for the anchor view if
it should be dropped too.

When a row is dropped, the dropped set is uniform over the non-empty *proper* subsets of the modalities: at
least one modality is dropped and at least one is kept (an all-placeholder tuple carries no information).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmdata.types import DROPPED, Tuples

SCOPES = ("batch", "row")


def modality_dropout(n: int, rng: np.random.Generator, *, modalities: Sequence[str], p: float = 0.6,
                     scope: str = "batch") -> np.ndarray:
    """Draw which modalities each of ``n`` anchors keeps.

    Args:
        n: batch size.
        rng: randomness source (see :func:`mmdata.samplers.derange.batch_rng`).
        modalities: field names, length M >= 2.
        p: probability of dropout: of the whole batch (``scope="batch"``, the paper's rule) or of each row
            independently (``scope="row"``). A row with dropout loses a uniform non-empty proper subset.
        scope: "batch" or "row".

    Returns:
        bool ``[n, M]``, True = kept.

    Raises:
        ValueError: p outside [0, 1], unknown scope, or fewer than 2 modalities with p > 0.
    """
    num_modalities = len(modalities)
    if not 0.0 <= p <= 1.0 or scope not in SCOPES:
        raise ValueError(f"need 0 <= p <= 1 and scope in {SCOPES}, got p={p}, scope={scope!r}")
    if num_modalities < 2 and p > 0:
        raise ValueError(f"modality dropout needs >= 2 modalities (one must stay), got {list(modalities)}")
    active = rng.random(1 if scope == "batch" else n) < p  # [1] or [n]
    # Subsets are the bit patterns 1 .. 2^M - 2: neither empty nor all modalities.
    dropped_set = rng.integers(1, max(2 ** num_modalities - 1, 2), size=n)
    return ~(_subset_bits(num_modalities)[dropped_set] & active[:, None])


@functools.lru_cache(maxsize=16)
def _subset_bits(num_modalities: int) -> np.ndarray:
    """bool ``[2^M, M]``: row ``s`` holds the bits of subset ``s`` (a lookup is ~3x faster than shifting them)."""
    bits = ((np.arange(2 ** num_modalities)[:, None] >> np.arange(num_modalities)) & 1).astype(bool)
    bits.setflags(write=False)  # shared between calls through the cache
    return bits


def drop_tuples(tuples: Tuples, mask: np.ndarray) -> Tuples:
    """Mark anchor ``b``'s dropped modalities as :data:`DROPPED` in all its negatives.

    Args:
        tuples: ``[n, k, M]``.
        mask: bool ``[n, M]`` (True = kept), from :func:`modality_dropout`.

    Returns:
        New Tuples ``[n, k, M]`` (the input is not modified).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (tuples.idx.shape[0], tuples.idx.shape[2]):
        raise ValueError(f"mask must be [n, M] = {[tuples.idx.shape[0], tuples.idx.shape[2]]}, got {mask.shape}")
    idx = tuples.idx.copy()
    # Through the [n, M, k] view the mask indexes whole rows of k: 2-3x faster than a where() broadcasting
    # [n, 1, M] against [n, k, M] (an inner loop of M elements).
    idx.transpose(0, 2, 1)[~mask] = DROPPED
    return Tuples(idx, tuples.modalities)


def drop_batch(batch: Mapping[str, Any], mask: np.ndarray, modalities: Sequence[str], *,
               placeholder: float = 0.0) -> dict[str, Any]:
    """Replace dropped modalities of a batch dict by a placeholder and flag them.

    Args:
        batch: batch dict (tensors ``[B, ...]`` or lists per field); not modified.
        mask: bool ``[B, M]`` (True = kept).
        modalities: the fields of the mask's columns.
        placeholder: fill value of dropped array rows ("" for list-of-str fields).

    Returns:
        A new dict: every other entry passed through unchanged; each modality's dropped rows filled; and
        ``<field>_dropped`` bool tensor ``[B]``. Lengths and masks of variable-length fields are kept, so an
        encoder still sees a well-formed (placeholder) sequence.
    """
    out = dict(batch)
    mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
    for m, name in enumerate(modalities):
        dropped = ~mask_t[:, m]
        value = batch[name]
        if isinstance(value, torch.Tensor):
            keep = (~dropped.to(value.device)).reshape(-1, *([1] * (value.dim() - 1)))
            out[name] = torch.where(keep, value, torch.full_like(value, placeholder))
        else:
            out[name] = ["" if d else v for v, d in zip(value, dropped.tolist())]
        out[f"{name}_dropped"] = dropped
    return out
