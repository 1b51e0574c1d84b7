"""Few-shot training subsets (ReFNet's 5% / 10% / 20% of the labels): stratified, nested, from the index only.

Method: one random **priority order** of all rows, built so that every prefix is stratified; the subset for
fraction f is the first ``round(f * n)`` rows of that order (round half up). Nesting is then automatic: for
the same rng the 5% subset is a prefix of the 10% subset, which is a prefix of the 20% one, for any fractions.

The order: rows are shuffled within their stratum; the r-th row (0-based) of a stratum of size n_s gets the
key ``(r + 0.5) / n_s``, except the first row of each stratum, which gets key 0. Sorting by key (random
tie-break) interleaves the strata systematically, so a prefix of size t holds about ``t * n_s / n`` rows of
stratum s, within about one row (a house-monotone, Webster-style apportionment; largest remainder would not
be nested), and every stratum has at least one row as soon as t >= the number of strata ("minimum one per class
where possible"; below that, the strata represented are a random choice).

Strata:
- single-label int labels: the class;
- float labels (regression, e.g. MOSI sentiment): the label rounded to the nearest integer (the 7-class
  Acc-7 binning of MMSA for [-3, 3]);
- multi-label (MM-IMDB genres: a 2-D multi-hot array, or a list column of multi-hot vectors or of class ids):
  the row's **rarest label** (fewest positive rows in the split; ties to the lower class id), and rows with no
  label form their own stratum. Rare genres, which a random subset loses first, are thereby guaranteed their
  share; frequent genres ride along with the rows they co-occur on. (Iterative stratification, Sechidis et al.
  2011, balances every label jointly but is not nested.)

Seed it once per experiment, not per epoch: ``make_rng(seed, "label_fraction")``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_FRACTIONS = (0.05, 0.1, 0.2)


def multi_hot(labels: Any) -> np.ndarray | None:
    """Labels as a bool multi-hot ``[n, C]`` when they are multi-label, else None.

    Accepts a 2-D array (multi-hot), or a 1-D object array / list whose items are sequences: equal-length
    bool or float vectors are multi-hot, integer sequences are class-id lists.
    """
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        return labels.astype(bool)
    items = list(labels) if not isinstance(labels, np.ndarray) or labels.dtype == object else None
    if not items or np.ndim(items[0]) == 0:
        return None
    arrays = [np.asarray(item) for item in items]
    if len({a.shape for a in arrays}) == 1 and arrays[0].dtype.kind in "bf":
        return np.stack(arrays).astype(bool)
    classes = 1 + max((int(a.max()) for a in arrays if a.size), default=-1)
    out = np.zeros((len(arrays), classes), dtype=bool)
    for row, ids in enumerate(arrays):
        out[row, ids.astype(np.int64)] = True
    return out


def strata(labels: Any) -> np.ndarray:
    """Stratum id per row (int64 ``[n]``) by the rules in the module docstring."""
    hot = multi_hot(labels)
    if hot is not None:
        counts = hot.sum(axis=0)
        # Absent labels get an infinite count so argmin picks a present one; empty rows get stratum -1.
        rarity = np.where(hot, counts[None, :], np.iinfo(np.int64).max)
        return np.where(hot.any(axis=1), rarity.argmin(axis=1), -1).astype(np.int64)
    values = np.asarray(labels)
    if values.dtype.kind == "f":
        return np.floor(values + 0.5).astype(np.int64)
    return values.astype(np.int64)


def priority_order(labels: Any, rng: np.random.Generator) -> np.ndarray:
    """All rows in the stratified priority order whose prefixes are the subsets (int64 ``[n]``)."""
    group = strata(labels)
    n = len(group)
    shuffled = rng.permutation(n)
    # Stable sort by stratum keeps the random order inside each stratum.
    by_stratum = shuffled[np.argsort(group[shuffled], kind="stable")]
    sizes = np.unique(group, return_counts=True)[1]  # in sorted stratum order, like by_stratum
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    rank = np.arange(n) - starts
    key = np.where(rank == 0, 0.0, (rank + 0.5) / np.repeat(sizes, sizes))
    return by_stratum[np.lexsort((rng.random(n), key))]


def subset_size(fraction: float, n: int) -> int:
    """``round(fraction * n)``, halves rounded up (Python's round would round half to even)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fractions must be in [0, 1], got {fraction}")
    return int(np.floor(fraction * n + 0.5))


def label_fraction(index: Mapping[str, Any] | Any, rng: np.random.Generator, *,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[float, np.ndarray]:
    """Nested, stratified subsets of a training split for each fraction.

    Args:
        index: the split's index columns (uses ``index["label"]``), or the labels themselves (``[n]`` ints or
            floats, ``[n, C]`` multi-hot, or a list column).
        rng: randomness source, seeded once per experiment.
        fractions: subset fractions in [0, 1].

    Returns:
        fraction -> sorted int64 index rows, exactly ``round(f * n)`` of them; subsets of smaller fractions
        are contained in those of larger ones.
    """
    labels = index["label"] if isinstance(index, Mapping) else index
    order = priority_order(labels, rng)
    return {float(f): np.sort(order[:subset_size(f, len(order))]) for f in fractions}
