"""TupleInfoNCE's contrastive objective (../shared/methods.md 5.1), the pieces :mod:`methods.tupleinfonce` trains.

Per anchor ``i`` (the clean batch row), with L2-normalised embeddings g and temperature t, the loss is the
cross-entropy of the positive (the augmented view of row ``i``) among::

    in-batch block   s(a_i, p_j) / t                  for every j (the other rows' positives: the alpha_0 negatives)
    disturbed block  s(a_i, n_ij) / t + log w_type    for the anchor's own negatives n_ij (its tuples)

This is the spec's "recommended form": the denominator ``e^{s+/t} + sum_j e^{s0_j/t} + sum_k w_k sum_j
e^{s^k_j/t}`` with the real weights w_k added as log-weights, which equals the official code's duplication of
block k ``w`` times for w in {1, 2, 4} (tests/test_tupleinfonce.py), and with no key block the loss is the
in-batch InfoNCE of info-nce-pytorch (``negative_keys=None``). When an anchor has fewer than B - 1 partners per
modality, each slot also weighs (B - 1) / (its type's slots): the sampled partners stand for the whole block
(:func:`slot_log_weights`), so the number of negatives trades cost for variance, not for emphasis.

Negatives are embedded without re-encoding: the key view is encoded once per modality ({field: [B, d]}), and a
disturbed negative is the fusion of the features its :class:`~mmdata.types.Tuples` row gathers ([B, K, M] ->
[B * K] per field). Modality dropout (TupleInfoNCE App. H) gives a missing modality its placeholder feature,
the encoder's output on zero inputs (not a zero feature), so a batch with dropout also encodes an
all-placeholder copy of the key view. The substitution is made on features for anchors, positives and
negatives alike: a missing field changes no other field's feature (with late fusion that equals zeroing its
input; a point cloud's geometry still groups the colour and height of a row whose ``points`` are missing).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from methods.blocks import frozen_running_stats
from mmdata.augment import OPS, Augmenter, default_policy
from mmdata.augment.batched import augment_on
from mmdata.rng import make_rng
from mmdata.samplers import drop_batch, drop_tuples, gather, modality_dropout, tuple_disturb
from mmdata.types import DROPPED, Tuples, field_modality

Parts = dict[str, torch.Tensor]
OBJECTIVES = ("tuple", "infonce", "none")
PROBES = ("finetune", "linear")
#: The ``search`` option's values (methods.tuple_search.TARGETS maps them to what they optimise).
SEARCH_OPTIONS = (False, True, "both", "ratios", "strength")


def contrastive_logits(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None,
                       log_weights: torch.Tensor | None = None, *, temperature: float) -> torch.Tensor:
    """The logits whose cross-entropy against ``arange(B)`` is the loss.

    Args:
        anchor: ``[B, D]`` queries; positive: ``[B, D]`` keys (row i is anchor i's positive); both are
            L2-normalised here (a no-op on normalised input).
        negatives: optional ``[B, K, D]`` per-anchor keys (disturbed tuples), normalised here too.
        log_weights: ``[B, K]`` or ``[K]`` added to the negatives' logits after the division by the
            temperature (``log w``; ``-inf`` removes a slot); None = weight 1.
        temperature: t > 0.

    Returns:
        float32 ``[B, B + K]``: ``[a_i . p_j / t | a_i . n_ij / t + log w_ij]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    anchor, positive = F.normalize(anchor.float(), dim=-1), F.normalize(positive.float(), dim=-1)
    logits = anchor @ positive.T / temperature
    if negatives is None:
        return logits
    disturbed = torch.einsum("bd,bkd->bk", anchor, F.normalize(negatives.float(), dim=-1)) / temperature
    if log_weights is not None:
        disturbed = disturbed + log_weights.to(disturbed)
    return torch.cat([logits, disturbed], dim=1)


def contrastive_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None,
                     log_weights: torch.Tensor | None = None, *, temperature: float) -> torch.Tensor:
    """Mean over anchors of the cross-entropy of :func:`contrastive_logits` (shapes there); a scalar."""
    logits = contrastive_logits(anchor, positive, negatives, log_weights, temperature=temperature)
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def resolve_weights(ratios: Mapping[str, float] | Sequence[float] | None, fields: tuple[str, ...]) -> dict[str, float]:
    """``{field: w}`` from None (all 1), a mapping naming every field, or a list in field order.

    Raises:
        ValueError: keys not matching the fields, a wrong length, or a negative or non-finite weight.
    """
    if ratios is None:
        values = [1.0] * len(fields)
    elif isinstance(ratios, Mapping):
        if set(ratios) != set(fields):
            raise ValueError(f"ratios must name exactly the fields {list(fields)}, got {sorted(ratios)}")
        values = [float(ratios[n]) for n in fields]
    else:
        values = [float(v) for v in ratios]
        if len(values) != len(fields):
            raise ValueError(f"ratios has {len(values)} entries for {len(fields)} fields {list(fields)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"ratios must be finite and >= 0, got {values}")
    return dict(zip(fields, values))


def check_options(objective: str, probe: str, search: bool | str, temperature: float, strength: float,
                  dropout_p: float, ratios: dict[str, float], counts: dict[str, int]) -> None:
    """Raise ValueError naming the first bad option of :func:`methods.tupleinfonce.build_model` and its valid
    values."""
    if objective not in OBJECTIVES or probe not in PROBES or search not in SEARCH_OPTIONS:
        raise ValueError(f"objective must be one of {OBJECTIVES}, probe one of {PROBES}, search one of "
                         f"{list(SEARCH_OPTIONS)}; got {objective!r}, {probe!r}, {search!r}")
    if temperature <= 0 or not 0 <= strength <= 1 or not 0 <= dropout_p <= 1:
        raise ValueError(f"need temperature > 0, 0 <= strength <= 1, 0 <= modality_dropout <= 1; got "
                         f"{temperature}, {strength}, {dropout_p}")
    if search and (objective != "tuple" or min(ratios.values()) <= 0):
        raise ValueError(f"search needs objective 'tuple' (got {objective!r}) and ratios > 0 (it moves log-ratios)")
    bad = {k: v for k, v in counts.items() if v < (1 if k in ("clones", "candidates") else 0)}
    if bad:
        raise ValueError(f"counts must be >= 0 (clones, candidates >= 1), got {bad}")


def view_augmenter(features: dict[str, Any], strength: float) -> Augmenter:
    """The positives' augmenter: each field's default ops (:func:`mmdata.augment.default_policy`) at
    ``strength``, less the ones that change a tensor's length (temporal crops: :func:`augment_batch` cannot
    batch them; text keeps its word dropout)."""
    policy = {name: tuple(op for op in ops if features[name].dtype == "str"
                          or not OPS[f"{op}_{field_modality(name)}"].changes_length)
              for name, ops in default_policy(features).items()}
    return Augmenter.from_features(features, policy=policy, strength=strength)


def augmented(augmenter: Augmenter, batch: dict[str, Any], rngs: list[np.random.Generator]) -> dict[str, Any]:
    """:func:`mmdata.augment.batched.augment_on` where the batch lies (uint16 depth is resampled as the
    per-sample numpy kernels do and stays uint16: torch has no uint16 flip on CPU)."""
    where = next((v.device for v in batch.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    return augment_on(augmenter, batch, rngs, where)


def disturbed_modalities(tuples: Tuples) -> np.ndarray:
    """bool ``[B, K, M]``: modality m of slot (b, j) comes from another row (not b, not :data:`DROPPED`)."""
    own = np.arange(tuples.idx.shape[0])[:, None, None]
    return (tuples.idx != own) & (tuples.idx != DROPPED)


def slot_log_weights(tuples: Tuples, log_ratios: torch.Tensor, *, population: int | None = None) -> torch.Tensor:
    """``log w`` of every negative slot.

    A slot disturbing exactly one modality m (a k = 1 disturbed negative) weighs ``w_m``; a slot disturbing
    several (full negatives, k > 1) weighs 1, as the in-batch alpha_0 negatives do; a slot disturbing none (its
    disturbed modality was dropped, so it equals the positive) is removed (``-inf``). With a ``population``, the
    anchor's S single-modality slots (removed ones included) stand for M full blocks of ``population``
    partners: each weighs ``w_m * population * M / S`` more. With the default sampler's c slots per modality
    that is ``population / c``, an unbiased estimate of the full block's sum, so ``w_m`` keeps its meaning
    (alpha_m / alpha_0) whatever the number of negatives; a configured sampler's unequal slot shares are kept.

    Args:
        tuples: ``[B, K, M]``.
        log_ratios: ``[M]`` log w per modality, in ``tuples.modalities`` order (-inf: weight 0).
        population: the partners each type samples from (B - 1 in-batch); None: no correction.

    Returns:
        float32 ``[B, K]`` on ``log_ratios``' device.
    """
    disturbed = torch.from_numpy(disturbed_modalities(tuples)).to(log_ratios.device)
    count = disturbed.sum(dim=-1)
    typed = disturbed & (count == 1)[..., None]  # [B, K, M]: the type of each single-modality slot
    out = torch.where(typed, log_ratios.float(), torch.zeros(())).sum(dim=-1)  # log w_m, or 0
    if population is not None:
        slots = (count <= 1).sum(dim=1, keepdim=True).clamp_min(1)  # [B, 1]
        scale = torch.log(population * disturbed.shape[-1] / slots.float())
        out = torch.where(count == 1, out + scale, out)
    return out.masked_fill(count == 0, float("-inf"))


def gathered_parts(full: Parts, tuples: Tuples, placeholder: Parts | None = None) -> Parts:
    """Per-field features of every negative, ``{field: [B * K, d]}``, gathered from the key view's features.

    Args:
        full: ``{field: [B, d]}`` features of the (undropped) key view.
        tuples: ``[B, K, M]`` over its rows; :data:`DROPPED` entries take anchor b's placeholder feature.
        placeholder: ``{field: [B, d]}`` features of the all-placeholder key view; needed when tuples has
            dropped entries.
    """
    n = tuples.idx.shape[0]
    idx = tuples.idx
    if (idx == DROPPED).any():
        if placeholder is None:
            raise ValueError("tuples with dropped modalities need the placeholder features")
        # Rows n.. of the stacked table are the placeholders: anchor b's dropped entry reads row n + b.
        idx = np.where(idx == DROPPED, n + np.arange(n)[:, None, None], idx)
        full = {name: torch.cat([full[name], placeholder[name]]) for name in tuples.modalities}
    taken = gather(full, Tuples(idx, tuples.modalities))
    return {name: taken[name].reshape(-1, taken[name].shape[-1]) for name in tuples.modalities}


def project(model: Any, parts: Parts) -> torch.Tensor:
    """g = normalise(projection(fusion(parts))): ``{field: [N, d]}`` -> float32 ``[N, proj_dim]``."""
    return F.normalize(model.projection(model.fusion(parts)).float(), dim=-1)


def placeholder_parts(model: Any, batch: dict[str, Any]) -> Parts:
    """Features ``{field: [B, d]}`` of the batch with every modality replaced by the placeholder (zeros).

    Batch norm layers normalise this all-zero batch by its own statistics, as in any training step, but do not
    fold them into their running averages: those must describe real inputs, which evaluation (and the
    discrimination score right after pretraining) normalises with."""
    none = np.zeros((len(batch["__key__"]), len(model.fields)), dtype=bool)
    with frozen_running_stats(model):
        return model.encode(drop_batch(batch, none, model.fields))



def kept(full: Parts, placeholder: Parts, mask: np.ndarray, fields: tuple[str, ...]) -> Parts:
    """Per field, row b's real feature where ``mask[b, m]`` (True = kept), else its placeholder feature."""
    rows = torch.as_tensor(mask, device=next(iter(full.values())).device)
    return {name: torch.where(rows[:, m, None], full[name], placeholder[name]) for m, name in enumerate(fields)}


def views_loss(model: Any, anchor_batch: dict[str, Any], key_batch: dict[str, Any], tuples: Tuples | None, *,
               anchor_mask: np.ndarray | None = None, key_mask: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The contrastive loss of a batch (anchors) against its key view (positives, and the negatives' source).

    Args:
        model: a :class:`methods.tupleinfonce.TupleInfoNCE` (``objective`` "tuple" or "infonce",
            ``temperature``, ``log_ratios()``).
        anchor_batch, key_batch: batch dicts of the same rows (the key view: an augmented copy).
        tuples: ``[B, K, M]`` negatives over the rows, over ``model.fields`` (unused by "infonce").
        anchor_mask, key_mask: optional bool ``[B, M]`` modality dropout (True = kept) of the anchors and of
            the positives; the key mask applies to each anchor's negatives too (the same modalities missing).

    Returns:
        ``{"loss": scalar, "contrastive_loss": detached, "negatives": mean kept negatives per anchor}``.
    """
    fields = model.fields
    own, full = model.encode(anchor_batch), model.encode(key_batch)
    dropped = anchor_mask is not None or key_mask is not None
    placeholder = placeholder_parts(model, key_batch) if dropped else None
    anchor = project(model, own if anchor_mask is None else kept(own, placeholder, anchor_mask, fields))
    positive = project(model, full if key_mask is None else kept(full, placeholder, key_mask, fields))
    negatives = log_weights = None
    if model.objective == "tuple":
        if tuples is None or tuple(tuples.modalities) != tuple(fields):
            raise ValueError(f"objective 'tuple' needs tuples over the fields {list(fields)}, got "
                             f"{None if tuples is None else list(tuples.modalities)}")
        if key_mask is not None:
            tuples = drop_tuples(tuples, key_mask)
        negatives = project(model, gathered_parts(full, tuples, placeholder)).reshape(*tuples.idx.shape[:2], -1)
        log_weights = slot_log_weights(tuples, model.log_ratios().to(anchor.device), population=len(anchor) - 1)
    loss = contrastive_loss(anchor, positive, negatives, log_weights, temperature=model.temperature)
    count = torch.zeros(()) if log_weights is None else torch.isfinite(log_weights).float().sum(dim=1).mean()
    return {"loss": loss, "contrastive_loss": loss.detach(), "negatives": count.detach()}


@dataclass(frozen=True)
class DisturbSampler:
    """The default negatives: ``tuple_disturb(n, rng, modalities=..., num_negatives=M * c, ratios=[0, 1, ..., 1],
    k=1)``, i.e. c disturbed negatives per modality and no full ones (the other rows' positives are the alpha_0
    negatives), with c = n - 1 (every other row once per modality, the official code's blocks without their
    fixed points) or ``num_negatives / M`` clipped to n - 1 for a small last batch. Picklable.
    """

    modalities: tuple[str, ...]
    num_negatives: int | None = None

    def __call__(self, n: int, rng: np.random.Generator) -> Tuples:
        """Tuples ``[n, K, M]`` over the rows of a batch of n."""
        m = len(self.modalities)
        total = m * (n - 1) if self.num_negatives is None else min(self.num_negatives, m * (n - 1))
        return tuple_disturb(n, rng, modalities=self.modalities, num_negatives=total, ratios=[0.0] + [1.0] * m, k=1)


def positive_view(model: Any, batch: dict[str, Any], where: tuple[int, int, int]) -> dict[str, Any]:
    """The augmented view of a batch: one generator per row from ``(seed, epoch, batch index, key)``."""
    if model.strength <= 0:
        return batch
    seed, epoch, index = where
    rngs = [make_rng(seed, "tupleinfonce_positive", epoch, index, key) for key in batch["__key__"]]
    return augmented(model.augmenter(), batch, rngs)


def dropout_masks(model: Any, n: int, where: tuple[int, int, int]
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(anchor mask, positive mask), bool ``[n, M]`` (True = kept), or (None, None) for a complete batch.

    One draw decides for the batch (probability ``modality_dropout``); then every anchor row and, independently,
    every positive row loses a uniform non-empty proper subset (:func:`mmdata.samplers.modality_dropout`).
    With one field there is no proper subset to drop: always (None, None).
    """
    rng = make_rng(where[0], "tupleinfonce_dropout", where[1], where[2])
    if model.modality_dropout <= 0 or len(model.fields) < 2 or rng.random() >= model.modality_dropout:
        return None, None
    return tuple(modality_dropout(n, rng, modalities=model.fields, p=1.0) for _ in range(2))
