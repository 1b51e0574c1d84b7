"""MDM's product-of-marginals negatives (Colombo et al., Algorithm 1): one derangement per modality.

In-batch (:func:`marginal_permute`): negative ``j`` of anchor ``b`` takes modality ``m`` from item
``sigma_{j,m}(b)``, with an independent uniform derangement ``sigma_{j,m}`` per negative and modality. Each
modality is then exactly a re-ordering of the batch (the marginals are preserved) and never the anchor's own
value, while the modalities of a negative are independent of one another: a sample of the product of
marginals.

Dataset-level (:func:`negative_dataset`): the paper's "negative dataset"
``D_bar = {(x_a^{sigma_a(j)}, x_v^{sigma_v(j)}, x_l^{sigma_l(j)})}`` built once per epoch from the index
(no media is touched), and :class:`NegativeReader` materialises its rows by random access into the shards,
through the member offsets in ``index.parquet``. Use ``make_rng(seed, "negative_dataset", epoch)`` so every
rank builds the same negative dataset; each rank then reads the rows of its own batches.

``exclude_joint``: with independent derangements all modalities of a negative can come from one item ``c``
(probability ~1/n per negative for two modalities), making it a real tuple. That is correct for the product of
marginals, but a discriminator between joint and product then sees a joint sample labelled "product".
``exclude_joint=True`` redraws those negatives (rejection again, so the draw stays uniform over the allowed
set).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.samplers.derange import MAX_TRIES, derangements
from mmdata.shards.collate import collate
from mmdata.shards.read import SplitShards
from mmdata.shards.members import MemberReader
from mmdata.types import Sample, Tuples


def marginal_permute(n: int, rng: np.random.Generator, *, modalities: Sequence[str], num_negatives: int = 1,
                     exclude_joint: bool = False) -> Tuples:
    """Product-of-marginals negatives over a batch of ``n`` items, a derangement per negative and modality.

    Args:
        n: batch size (items are batch rows), >= 2.
        rng: randomness source (see :func:`mmdata.samplers.derange.batch_rng`).
        modalities: field names, length M.
        num_negatives: negatives per anchor (independent sets of M derangements).
        exclude_joint: redraw negatives whose modalities would all come from a single item (needs M >= 2,
            and n >= 3 when M >= 2 since two items have a single derangement).

    Returns:
        Tuples ``[n, num_negatives, M]`` with ``idx[:, j, m]`` a derangement of ``range(n)`` for every j, m.

    Raises:
        ValueError: n < 2, or ``exclude_joint`` impossible for this n and M.
    """
    modalities = tuple(modalities)
    num_modalities = len(modalities)
    if exclude_joint and (num_modalities < 2 or n < 3):
        raise ValueError(f"exclude_joint needs >= 2 modalities and >= 3 items, got {num_modalities} and {n}: "
                         f"every negative would be a real tuple")
    perms = derangements(n, rng, count=num_negatives * num_modalities).reshape(num_negatives, num_modalities, n)
    if exclude_joint:
        perms = _redraw_joint(perms, rng)
    return Tuples(np.ascontiguousarray(perms.transpose(2, 0, 1)), modalities)


def _joint_rows(perms: np.ndarray) -> np.ndarray:
    """Negatives (first axis of ``perms [k, M, n]``) in which some anchor takes all modalities from one item."""
    return np.flatnonzero((perms == perms[:, :1, :]).all(axis=1).any(axis=1))


def _redraw_joint(perms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Redraw whole negatives (all M derangements) that contain a real tuple, until none does."""
    _, num_modalities, n = perms.shape
    bad = _joint_rows(perms)
    for _ in range(MAX_TRIES):
        if not bad.size:
            return perms
        perms[bad] = derangements(n, rng, count=bad.size * num_modalities).reshape(bad.size, num_modalities, n)
        bad = bad[_joint_rows(perms[bad])]
    raise ValueError(f"could not avoid real tuples after {MAX_TRIES} redraws (n={n}); use exclude_joint=False")


def _count(index_or_n: int | Mapping[str, Any] | SplitShards) -> int:
    """Number of index rows in an int, an index dict (``read_index``) or an opened split."""
    if isinstance(index_or_n, SplitShards):
        index_or_n = index_or_n.index
    if isinstance(index_or_n, Mapping):
        return len(index_or_n["key"])
    return int(index_or_n)


def negative_dataset(index_or_n: int | Mapping[str, Any] | SplitShards, rng: np.random.Generator, *,
                     modalities: Sequence[str], exclude_joint: bool = False) -> Tuples:
    """MDM's negative dataset over a whole split: row ``j`` takes modality m from index row ``sigma_m(j)``.

    Args:
        index_or_n: the split's index (dict of columns, or a :class:`SplitShards`) or its row count N.
        rng: per-epoch randomness, e.g. ``make_rng(seed, "negative_dataset", epoch)`` (same on every rank).
        modalities: field names, length M.
        exclude_joint: see the module docstring.

    Returns:
        Tuples ``[N, 1, M]`` over index rows; ``idx[:, 0, m]`` is a derangement of ``range(N)``.
    """
    return marginal_permute(_count(index_or_n), rng, modalities=modalities, num_negatives=1,
                            exclude_joint=exclude_joint)


class NegativeReader:
    """Reads rows of a negative dataset by random access: each modality from its own source index row.

    Only the tuple's modalities are read (one member per modality per row), with the same header and crc32
    checks as :func:`mmdata.load`. Picklable for DataLoader workers (file descriptors are reopened lazily).

    Args:
        shards: the opened split, or its directory.
        tuples: a dataset-level Tuples ``[N, k, M]`` over this split's index rows (e.g. from
            :func:`negative_dataset`); negative ``j`` of row ``r`` is read with ``read(r, j)``.
    """

    def __init__(self, shards: SplitShards | str | Path, tuples: Tuples) -> None:
        self.shards = shards if isinstance(shards, SplitShards) else SplitShards.open(shards)
        self.tuples = tuples
        rows = len(self.shards.index["key"])
        if tuples.idx.size and not ((tuples.idx >= 0) & (tuples.idx < rows)).all():
            raise ValueError(f"tuples refer to index rows outside 0..{rows - 1} of {self.shards.directory}")
        unknown = sorted(set(tuples.modalities) - set(self.shards.features))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; {self.shards.directory} has {sorted(self.shards.features)}")
        self._readers: dict[str, MemberReader] = {}

    def _reader(self, name: str) -> MemberReader:
        if name not in self._readers:
            self._readers[name] = MemberReader(self.shards.directory, self.shards.stored, self.shards.index, [name],
                                               view=self.shards.view, label=self.shards.label)
        return self._readers[name]

    def read(self, row: int, negative: int = 0) -> Sample:
        """Negative ``negative`` of index row ``row`` as a sample dict.

        Returns:
            ``__key__`` joining the source keys with "+", ``__sources__`` (source index row per modality) and
            one decoded value per modality.
        """
        sources = self.tuples.idx[row, negative]
        sample: Sample = {"__sources__": {m: int(s) for m, s in zip(self.tuples.modalities, sources)}}
        keys = []
        for name, source in zip(self.tuples.modalities, sources):
            value = self._reader(name).read(int(source))
            sample[name] = value[name]
            keys.append(value["__key__"])
        sample["__key__"] = "+".join(keys)
        return sample

    def read_batch(self, rows: Sequence[int], negative: int = 0) -> dict[str, Any]:
        """Negatives of ``rows`` collated like a batch of :func:`mmdata.load` (tensors ``[B, ...]``).

        The same samples as ``[read(r, negative) for r in rows]``, read with one batched
        :meth:`MemberReader.read_batch` per modality (vectorised offsets and checks, neighbours read at once).
        """
        sources = self.tuples.idx[np.asarray(rows, dtype=np.int64).reshape(-1), negative]  # [B, M]
        columns = [self._reader(name).read_batch(sources[:, m]) for m, name in enumerate(self.tuples.modalities)]
        samples: list[Sample] = []
        for j, values in enumerate(zip(*columns)):
            sample: Sample = {"__sources__": {m: int(s) for m, s in zip(self.tuples.modalities, sources[j])}}
            sample.update({name: value[name] for name, value in zip(self.tuples.modalities, values)})
            sample["__key__"] = "+".join(value["__key__"] for value in values)
            samples.append(sample)
        return collate(samples, self.shards.features, self.tuples.modalities)

    def close(self) -> None:
        """Close the open shard files (they reopen on the next read)."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __getstate__(self) -> dict[str, Any]:
        # File descriptors do not survive pickling; workers reopen them on first read.
        return {"shards": self.shards, "tuples": self.tuples, "_readers": {}}
