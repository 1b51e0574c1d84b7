"""Negative-tuple samplers, modality dropout, few-shot subsets, pair mining, gathering and the tuple loss.

Every sampler is a pure function ``(n_or_index, rng, **options) -> result`` with keyword-only options whose
names are the keys of its ``samplers.<name>`` block in params.yaml (``modalities`` excepted: it comes from the
experiment's ``fields``). Three registries, by what they return:

- :data:`SAMPLERS` -> :class:`mmdata.types.Tuples` ``[n, k, M]`` (in-batch or over index rows);
- :data:`MASKS` -> bool ``[n, M]`` modality masks;
- :data:`SUBSETS` -> fraction -> index rows.

Randomness comes only from the ``rng`` argument; in training derive it with :func:`batch_rng` from
``(seed, epoch, batch index)`` so tuples do not depend on the worker or worker count. The project README shows
the samplers on plain tensors outside the toolkit.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmdata.samplers.derange import batch_rng, derangements, distinct_partners, is_derangement
from mmdata.samplers.gather import gather
from mmdata.samplers.label_fraction import label_fraction, priority_order
from mmdata.samplers.loss import tuple_infonce
from mmdata.samplers.marginal_permute import NegativeReader, marginal_permute, negative_dataset
from mmdata.samplers.modality_dropout import drop_batch, drop_tuples, modality_dropout
from mmdata.samplers.pairs import (as_tuples, cosine_similarity, different_label_pairs, dot_similarity,
                                   hard_negatives, same_label_pairs)
from mmdata.samplers.tuple_disturb import allocate, negative_types, tuple_disturb

SAMPLERS: dict[str, Callable[..., Any]] = {
    "tuple_disturb": tuple_disturb,
    "marginal_permute": marginal_permute,
    "negative_dataset": negative_dataset,
}
MASKS: dict[str, Callable[..., Any]] = {"modality_dropout": modality_dropout}
SUBSETS: dict[str, Callable[..., Any]] = {"label_fraction": label_fraction}
#: Every configurable sampler; params.yaml's ``samplers:`` block has exactly these entries.
REGISTRY: dict[str, Callable[..., Any]] = {**SAMPLERS, **MASKS, **SUBSETS}
#: Options supplied by the experiment (its ``fields``), not by params.yaml.
CONTEXT_OPTIONS = frozenset({"modalities"})


def sampler_options(name: str) -> set[str]:
    """Keyword-only options of registered sampler ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; registered: {sorted(REGISTRY)}")
    params = inspect.signature(REGISTRY[name]).parameters.values()
    return {p.name for p in params if p.kind == p.KEYWORD_ONLY}


def check_sampler_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming unknown sampler or option keys and the valid ones."""
    valid = sampler_options(name)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}; valid: {sorted(valid)}")


@dataclass(frozen=True)
class Sampler:
    """A configured sampler: ``Sampler("tuple_disturb", {...})(n, rng)``; picklable for DataLoader workers.

    Attributes:
        name: a key of :data:`REGISTRY`.
        options: its keyword-only options (checked at construction).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sampler_options(self.name, self.options)

    def __call__(self, n_or_index: Any, rng: Any) -> Any:
        """Run the sampler on ``n_or_index`` with ``rng``."""
        return REGISTRY[self.name](n_or_index, rng, **self.options)


__all__ = [
    "CONTEXT_OPTIONS", "MASKS", "REGISTRY", "SAMPLERS", "SUBSETS", "NegativeReader", "Sampler", "allocate",
    "as_tuples", "batch_rng", "check_sampler_options", "cosine_similarity", "derangements",
    "different_label_pairs", "distinct_partners", "dot_similarity", "drop_batch", "drop_tuples", "gather",
    "hard_negatives", "is_derangement", "label_fraction", "marginal_permute", "modality_dropout",
    "negative_dataset", "negative_types", "priority_order", "same_label_pairs", "sampler_options",
    "tuple_infonce", "tuple_disturb",
]
