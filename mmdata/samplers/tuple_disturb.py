"""TupleInfoNCE's tuple disturbing (Liu et al. 2021, section 4.1-4.2): in-batch negatives of several types.

For an anchor ``b`` each negative is either

- a **full** negative: every modality from one other item ``c != b`` (the vanilla InfoNCE negative), or
- a **disturbed** negative of type ``m``: the anchor's own tuple with modality ``m`` (and, when ``k > 1``,
  ``k - 1`` further modalities drawn uniformly from the others) taken from one other item ``c != b``. The
  undisturbed modalities stay in correspondence, so the tuple is negative only because of modality ``m``,
  which forces the encoder to use it.

The paper draws the types with prior probabilities ``alpha`` (the "all" share and one share per modality).
Here the ``num_negatives`` slots are **allocated exactly in proportion** to the ratios by the largest-remainder
method (exact rational arithmetic, ties to the earlier type), so every anchor gets the same counts and the
ratios are honoured exactly, not within sampling error. Ratios are any non-negative reals; there is no
power-of-two doubling of slots. Slot order is fixed: full negatives first, then each modality's disturbed
negatives in ``modalities`` order (:func:`negative_types` names the type of every slot).

Partners are never the anchor itself, so no negative equals its anchor, and distinct within a type for each
anchor (no duplicate negative of one type); when the batch has enough other items (``num_negatives <= n - 1``)
they are distinct across all of an anchor's negatives, which only adds variety (each type's partners are still
a uniform subset).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from mmdata.samplers.derange import distinct_partners, partners_table
from mmdata.types import Tuples

#: Key of the full-negative share in a ratios mapping.
ALL = "all"
Ratios = Mapping[str, float] | Sequence[float] | None


def resolve_ratios(ratios: Ratios, modalities: Sequence[str]) -> list[float]:
    """Ratios as ``[alpha_all, alpha_1, ..., alpha_M]`` (type order of the slots).

    Args:
        ratios: a mapping ``{"all": a0, <modality>: a_m, ...}`` (missing keys are 0), a sequence aligned with
            ``modalities`` (no full negatives), or that sequence preceded by the "all" share (length M + 1).
            None means full negatives only (vanilla InfoNCE).
        modalities: field names, length M.

    Raises:
        ValueError: unknown keys, wrong length, negative or non-finite values, or all zero.
    """
    if ratios is None:
        values = [1.0] + [0.0] * len(modalities)
    elif isinstance(ratios, Mapping):
        unknown = sorted(set(ratios) - {ALL, *modalities})
        if unknown:
            raise ValueError(f"unknown ratio key(s) {unknown}; valid: {[ALL, *modalities]}")
        values = [float(ratios.get(name, 0.0)) for name in (ALL, *modalities)]
    else:
        values = [float(v) for v in ratios]
        if len(values) == len(modalities):
            values = [0.0, *values]
        elif len(values) != len(modalities) + 1:
            raise ValueError(f"ratios has {len(values)} entries; give {len(modalities)} (one per modality) or "
                             f"{len(modalities) + 1} (the 'all' share first)")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"ratios must be finite, non-negative and not all zero, got {values}")
    return values


def allocate(ratios: Sequence[float], total: int) -> np.ndarray:
    """Split ``total`` slots in proportion to ``ratios`` by the largest-remainder (Hamilton) method.

    Each count is the floor or the ceiling of its exact quota ``total * r / sum(r)``; a zero ratio gets 0.
    Fractions make the quotas exact, so the result never depends on float rounding.

    Returns:
        int64 ``[len(ratios)]`` summing to ``total``.
    """
    exact = [Fraction(r) for r in ratios]
    quotas = [total * r / sum(exact) for r in exact]
    counts = [math.floor(q) for q in quotas]
    remainders = [q - c if r > 0 else Fraction(-1) for q, c, r in zip(quotas, counts, exact)]
    # Python's sort is stable: equal remainders go to the earlier type, deterministically.
    for i in sorted(range(len(quotas)), key=lambda i: -remainders[i])[:total - sum(counts)]:
        counts[i] += 1
    return np.asarray(counts, dtype=np.int64)


def negative_types(*, modalities: Sequence[str], num_negatives: int, ratios: Ratios = None) -> np.ndarray:
    """Type of every negative slot: -1 for a full negative, ``m`` for a negative disturbing modality ``m``.

    Returns:
        int64 ``[num_negatives]``, the same for every anchor.
    """
    counts = allocate(resolve_ratios(ratios, modalities), num_negatives)
    return np.repeat(np.arange(-1, len(modalities), dtype=np.int64), counts)


def tuple_disturb(n: int, rng: np.random.Generator, *, modalities: Sequence[str], num_negatives: int = 16,
                  ratios: Ratios = None, k: int = 1) -> Tuples:
    """Full and k-disturbed negatives for every anchor of an in-batch set of ``n`` items.

    Args:
        n: batch size (items are batch rows).
        rng: randomness source (see :func:`mmdata.samplers.derange.batch_rng`).
        modalities: field names, length M.
        num_negatives: negatives per anchor.
        ratios: type shares, see :func:`resolve_ratios` (None: full negatives only).
        k: modalities disturbed per disturbed negative, 1 <= k <= M (k = M makes it a full negative).

    Returns:
        Tuples ``[n, num_negatives, M]``: ``idx[b, j, m] == b`` where modality m is undisturbed, another row
        (never b) where it is disturbed; slot types as :func:`negative_types`.

    Raises:
        ValueError: bad ratios or k, or a type needing more distinct partners than ``n - 1``.
    """
    modalities = tuple(modalities)
    if not 1 <= k <= len(modalities):
        raise ValueError(f"k must be in 1..{len(modalities)} (number of modalities), got {k}")
    layout = _layout(tuple(resolve_ratios(ratios, modalities)), num_negatives, len(modalities))
    # Every index comes from one row of a table [n, 1 + K]: column 0 the anchor, column 1 + j slot j's partner; a
    # gather by column is ~5x faster than a broadcast np.where at these sizes.
    if num_negatives <= n - 1:  # the usual case: one draw, partners distinct across all slots of an anchor
        table = partners_table(n, num_negatives, rng)
    else:  # more slots than other items: one batched draw per type, a type with c slots using the first c
        # partners of its draw (a uniform c-subset: distinct_partners returns its subset in random order)
        partners = distinct_partners(n, layout.max_count, rng, count=layout.draws)  # [T, n, c_max]
        table = np.empty((n, num_negatives + 1), dtype=np.int64)
        table[:, 0], table[:, 1:] = np.arange(n), partners[layout.draw, :, layout.position].T
    if k == 1:  # the same columns for every anchor
        return Tuples(table[:, layout.source], modalities)
    if k == len(modalities):  # every negative takes all modalities from its partner
        return Tuples(np.repeat(table[:, 1:, None], k, axis=2), modalities)
    keys = rng.random((n, num_negatives, len(modalities)))
    keys[:, layout.own] = -np.inf  # the type's own modality is always among the k smallest
    disturbed = (keys <= np.partition(keys, k - 1, axis=-1)[..., k - 1:k]) | layout.full  # [n, K, M]
    source = np.where(disturbed, np.arange(1, num_negatives + 1)[:, None], 0).reshape(n, -1)
    return Tuples(np.take_along_axis(table, source, axis=1).reshape(disturbed.shape), modalities)


class _Layout(NamedTuple):
    """The anchor-independent part of a configuration: which type, draw and position each slot has."""

    max_count: int  # most slots of one type
    draws: int  # types with at least one slot
    draw: np.ndarray  # [K] which draw each slot takes its partner from
    position: np.ndarray  # [K] position of the slot within its type
    own: np.ndarray  # [K, M] bool: the slot's type modality
    full: np.ndarray  # [K, 1] bool: the slot is a full negative
    source: np.ndarray  # [K, M] table column of each index for k = 1: 1 + slot where disturbed, else 0 (anchor)


@functools.lru_cache(maxsize=256)
def _layout(ratios: tuple[float, ...], num_negatives: int, num_modalities: int) -> _Layout:
    # Cached per configuration: exact Fraction arithmetic and index set-up would cost more than the draw.
    counts = allocate(ratios, num_negatives)
    types = np.repeat(np.arange(-1, num_modalities, dtype=np.int64), counts)  # as negative_types
    present = np.flatnonzero(counts)
    draw_of_type = np.zeros(len(counts), dtype=np.int64)
    draw_of_type[present] = np.arange(len(present))
    position = np.arange(num_negatives) - np.repeat(np.cumsum(counts) - counts, counts)
    own = types[:, None] == np.arange(num_modalities)[None, :]
    full = (types < 0)[:, None]
    source = np.where(own | full, np.arange(1, num_negatives + 1)[:, None], 0)
    layout = _Layout(int(counts.max(initial=0)), len(present), draw_of_type[types + 1], position, own, full,
                     source)
    for array in layout[2:]:
        array.setflags(write=False)  # shared between calls through the cache
    return layout
