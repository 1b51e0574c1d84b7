"""Reusable losses and loss weightings, shared by the methods (a method's own objective stays in its module).

- :data:`REGRESSION_LOSSES`: the ``regression_loss`` option of a regression head, by name (defined in
  :mod:`methods.heads`, with the other task-head functions).
- :func:`median_frequency_weights`: per-batch class weights for a dense cross-entropy.
- :func:`multi_similarity_loss`: the multi-similarity loss with its miner (Wang et al. 2019; ReFNet_MS), on
  class ids or multi-hot labels.
- :data:`REFINER_LOSSES`: ReFNet's refiner costs ``loss(decoded [B, D], target [B, D]) -> scalar``, by name.
- :func:`dependency_bound` (MDM; MINE's gradient via :class:`MovingAverage`), :func:`gradient_penalty` (Lipschitz).

Every loss here computes in float32 (float64 inputs stay float64) with autocast off: the multi-similarity
exponent scales a similarity by 50, which a bf16 matmul (3 significant digits) would turn into noise.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from methods.heads import REGRESSION_LOSSES

__all__ = ["DEPENDENCY_BOUNDS", "REFINER_LOSSES", "REGRESSION_LOSSES", "MovingAverage", "dependency_bound",
           "gradient_penalty", "log_mean_exp", "median_frequency_weights", "multi_similarity_loss",
           "refiner_contrastive_loss", "refiner_cosine_loss", "refiner_mse_loss"]


def median_frequency_weights(target: torch.Tensor, classes: int, void: int = 0) -> torch.Tensor:
    """Median-frequency class weights [K] (SegNet, FuseNet on NYUv2) from a batch's labelled pixels.

    ``w_c = median(f) / f_c`` over the classes present; absent classes and ``void`` get weight 0 (no pixel
    uses them). Estimated per batch because the loop gives a method no pass over the data before training.

    Args:
        target: class ids, any shape (e.g. [B, H, W]), int64.
        classes: K, the number of classes (``void`` included).
        void: the class id that marks unlabelled pixels.

    Returns:
        float32 [K] on ``target``'s device.
    """
    counts = torch.bincount(target.reshape(-1), minlength=classes)[:classes].float()
    counts[void] = 0
    present = counts > 0
    weight = torch.zeros(classes, device=target.device)
    if present.any():
        freq = counts[present] / counts[present].sum()
        weight[present] = freq.median() / freq
    return weight


def _float32(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``t``'s device, so that matmuls inside run in the float32 of their inputs."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 when it already is (never narrower than float32)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pair masks, both bool [N, N] with a False diagonal.

    Class ids [N]: positives have the same id. Multi-hot [N, C] (any nonzero entry is a label): positives share
    at least one label, negatives share none; a row with no label is a negative of every other row.

    Raises:
        ValueError: floating-point labels of shape [N] (regression targets have no classes) or another rank.
    """
    if labels.dim() == 1:
        if labels.is_floating_point():
            raise ValueError("multi_similarity_loss: labels [N] must be integer class ids, got floating point "
                             "(a regression target has no classes); multi-hot labels are [N, C]")
        same = labels[:, None] == labels[None, :]
    elif labels.dim() == 2:
        hot = (labels != 0).float()
        same = (hot @ hot.T) > 0
    else:
        raise ValueError(f"multi_similarity_loss: labels must be [N] class ids or [N, C] multi-hot, got shape "
                         f"{tuple(labels.shape)}")
    off = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & off, ~same & off


def _mine(sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, ...]:
    """The multi-similarity miner on sim [N, N]: keep positive k if ``S_ik - eps < max_{N_i} S`` and negative k
    if ``S_ik + eps > min_{P_i} S``; an anchor with no positive or no negative keeps nothing (the +-inf
    sentinels make both conditions false). Returns the kept (pos, neg) masks, bool [N, N]."""
    inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
    hardest_pos = sim.masked_fill(~pos, inf).amin(dim=1, keepdim=True)  # least similar positive
    hardest_neg = sim.masked_fill(~neg, -inf).amax(dim=1, keepdim=True)  # most similar negative
    return pos & (sim - epsilon < hardest_neg), neg & (sim + epsilon > hardest_pos)


def _log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log(1 + sum_{k in mask_i} exp(x_ik))`` per row [N]: a logsumexp with an appended 0 (stable for the
    large exponents of the negative term); an empty row gives exactly 0 and no gradient."""
    x = x.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(torch.cat([x, x.new_zeros(len(x), 1)], dim=1), dim=1)


def multi_similarity_loss(embeddings: torch.Tensor, labels: torch.Tensor, *, pos_scale: float = 2.0,
                          neg_scale: float = 50.0, base: float = 0.5, epsilon: float | None = 0.1) -> torch.Tensor:
    """Multi-similarity loss (Wang et al. 2019) with its miner, on cosine similarities; ReFNet_MS's L_MS.

    ``L = 1/N sum_i [1/a_p log(1 + sum_{k in P_i} e^{-a_p (S_ik - base)}) +
    1/a_n log(1 + sum_{k in N_i} e^{a_n (S_ik - base)})]`` with S the cosine similarity, the diagonal
    excluded, and P_i, N_i mined with ``epsilon`` (see :func:`_mine`). The mean runs over all N anchors; an
    anchor with an empty mined set contributes 0 for that term.

    Equal to pytorch-metric-learning's ``MultiSimilarityLoss(alpha=pos_scale, beta=neg_scale, base=base)``
    with ``MultiSimilarityMiner(epsilon)`` on class ids, except for one PML quirk we do not copy: PML returns 0
    whenever every mined index tensor holds at most one pair (e.g. a single anchor mines one positive and one
    negative), because it treats that as "nothing to compute"; here that anchor still gets its loss.

    Args:
        embeddings: [N, D], any scale (rows are L2-normalised here).
        labels: int class ids [N], or multi-hot [N, C] (positives share at least one label, negatives share
            none; MMF compares every row with row 0's labels, a bug not copied).
        pos_scale: a_p, the positive exponent scale (PML ``alpha``; "beta" in ReFNet's Eq. 5).
        neg_scale: a_n, the negative exponent scale (PML ``beta``).
        base: lambda, the similarity margin both terms are centred on.
        epsilon: the miner's margin; None uses every positive and negative pair (no mining).

    Returns:
        float32 scalar (float64 for float64 embeddings).

    Raises:
        ValueError: an empty batch, mismatched lengths, or labels that are not class ids or multi-hot.
    """
    if len(embeddings) == 0 or len(embeddings) != len(labels):
        raise ValueError(f"multi_similarity_loss: need N >= 1 embeddings and N labels, got {len(embeddings)} "
                         f"and {len(labels)}")
    labels = labels.to(embeddings.device)
    with _float32(embeddings):
        x = F.normalize(_wide(embeddings), p=2, dim=1)
        sim = x @ x.T
        pos, neg = _pair_masks(labels)
        if epsilon is not None:
            with torch.no_grad():  # mining selects pairs; no gradient flows through the selection
                pos, neg = _mine(sim, pos, neg, epsilon)
        pos_term = _log1p_sum_exp(pos_scale * (base - sim), pos) / pos_scale
        neg_term = _log1p_sum_exp(neg_scale * (sim - base), neg) / neg_scale
        return (pos_term + neg_term).mean()


def refiner_cosine_loss(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean_b cos(decoded_b, target_b)`` (MMF's cosine refiner cost; MultiBench's CosineEmbeddingLoss with
    target +1). decoded, target: [B, D]; returns a float32 scalar in [0, 2]."""
    with _float32(decoded):
        return 1.0 - F.cosine_similarity(_wide(decoded), _wide(target), dim=-1).mean()


def refiner_mse_loss(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((decoded - target)^2)`` over all B * D entries. decoded, target: [B, D]; returns a float32 scalar."""
    with _float32(decoded):
        return F.mse_loss(_wide(decoded), _wide(target))


def refiner_contrastive_loss(decoded: torch.Tensor, target: torch.Tensor, *, variant: str = "mmf",
                             margin: float = 0.1) -> torch.Tensor:
    """ReFNet's refiner-contrastive cost: each decoded row should be closer to its own target than to the
    batch's other targets. With ``r_ij = cos(decoded_i, target_j)`` over the batch:

    - ``"mmf"`` (default; MMF's RefinerContrastiveLoss): per row i, the violators
      ``V_i = {j != i : r_ij > r_ii - margin}``; ``L = 1/B sum_i 1[V_i nonempty] mean_{j in V_i}
      (margin + r_ij - r_ii)``. (MMF drops the own column by value, |r_ij - r_ii| > 1e-16, which also drops
      exact ties; here by index.)
    - ``"paper_eq4"``: Eq. 4 of the paper as printed, per column (target) t ``sum_{k != t} max(0, r_kt - r_tt)``,
      averaged over the B columns; it has no margin, so ``margin`` is not used.

    Args:
        decoded: [B, D] refiner outputs.
        target: [B, D] refiner targets.
        variant: "mmf" or "paper_eq4".
        margin: the "mmf" margin.

    Returns:
        float32 scalar (0 for B = 1).

    Raises:
        ValueError: an unknown variant.
    """
    if variant not in ("mmf", "paper_eq4"):
        raise ValueError(f"unknown refiner-contrastive variant {variant!r}; known: mmf, paper_eq4")
    with _float32(decoded):
        sim = F.normalize(_wide(decoded), dim=-1) @ F.normalize(_wide(target), dim=-1).T  # [B, B]
        own = sim.diagonal()
        off = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
        if variant == "paper_eq4":
            return ((sim - own[None, :]).clamp(min=0) * off).sum(dim=0).mean()
        violators = off & (sim > own[:, None] - margin)
        gaps = ((margin + sim - own[:, None]) * violators).sum(dim=1)
        return (gaps / violators.sum(dim=1).clamp(min=1)).mean()


#: ReFNet's refiner costs by name (the ``refiner_loss`` option): ``loss(decoded [B, D], target [B, D]) ->
#: scalar``; "contrastive" also takes the keyword options ``variant`` and ``margin``.
REFINER_LOSSES = {"cosine": refiner_cosine_loss, "mse": refiner_mse_loss, "contrastive": refiner_contrastive_loss}


#: MDM's bounds (methods.md 3.1, 7.4): "dv" (Donsker-Varadhan, KL), "nwj" (f-divergence), "wasserstein" (W-b: DV
#: on a Lipschitz critic, the default reading) and "wasserstein_kr" (W-a: Kantorovich-Rubinstein).
DEPENDENCY_BOUNDS = ("dv", "nwj", "wasserstein", "wasserstein_kr")


def log_mean_exp(x: torch.Tensor) -> torch.Tensor:
    """``log mean exp`` over the last axis, stable (logsumexp - log n): [..., n] -> [...]."""
    return torch.logsumexp(x, dim=-1) - math.log(x.shape[-1])


class _LogMeanExpEMA(torch.autograd.Function):
    """LME(T-) forward; MINE's backward ``e^{T-} / (EMA + 1e-6) / m`` (1e-6: gtegner's guard), computed as
    ``e^{T- - log(EMA + 1e-6)}`` so that a large score does not overflow e^T."""

    @staticmethod
    def forward(ctx, marginal: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(marginal, average)
        return log_mean_exp(marginal)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        marginal, average = ctx.saved_tensors
        scale = (marginal - torch.log(average + 1e-6).unsqueeze(-1)).exp() / marginal.shape[-1]
        return grad.unsqueeze(-1) * scale, None


class MovingAverage:
    """MINE's ``EMA <- rate * mean(e^{T-}) + (1 - rate) * EMA`` from the first batch's mean (methods.md 7.4;
    rate 0.01 in MINE); ``value`` [...] is None before the first update. Stateful: keep one per critic."""

    def __init__(self, rate: float = 0.01) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"MovingAverage rate must be in (0, 1], got {rate}")
        self.rate, self.value = float(rate), None

    def update(self, marginal: torch.Tensor) -> torch.Tensor:
        """Fold in a batch of critic scores on the negatives [..., m]; returns the updated average [...]."""
        with torch.no_grad():
            mean = log_mean_exp(_wide(marginal)).exp()
            self.value = mean if self.value is None else self.rate * mean + (1.0 - self.rate) * self.value
        return self.value


def dependency_bound(joint: torch.Tensor, marginal: torch.Tensor, kind: str = "dv", *,
                     ema: torch.Tensor | None = None) -> torch.Tensor:
    """A lower bound on the dependency between modalities (joint vs product of marginals) from critic scores.

    ``"dv"`` and ``"wasserstein"`` (W-b; the caller keeps its critic 1-Lipschitz): ``mean(T+) - LME(T-)``;
    ``"nwj"``: ``mean(T+) - mean(e^{T- - 1})``; ``"wasserstein_kr"`` (W-a): ``mean(T+) - mean(T-)``.

    Args:
        joint, marginal: critic scores T+ [..., n] on joint samples, T- [..., m] on product-of-marginal ones.
        kind: a key of :data:`DEPENDENCY_BOUNDS`.
        ema: MINE's average of ``mean(e^{T-})`` [...] (:class:`MovingAverage`; dv and wasserstein only): same
            value, but the LME term's gradient becomes ``e^{T-} / (ema + 1e-6) / m`` (gtegner/mine-pytorch).

    Returns:
        The bound [...] (a scalar for 1-D scores), float32 (float64 stays), computed with autocast off.

    Raises:
        ValueError: an unknown kind, or ``ema`` with a bound that has no log-mean-exp term."""
    if kind not in DEPENDENCY_BOUNDS:
        raise ValueError(f"unknown dependency bound {kind!r}; known: {', '.join(DEPENDENCY_BOUNDS)}")
    if ema is not None and kind not in ("dv", "wasserstein"):
        raise ValueError(f"ema (MINE's moving-average gradient) applies to dv and wasserstein, not {kind!r}")
    with _float32(joint):
        joint, marginal = _wide(joint), _wide(marginal)
        if kind == "nwj":
            second = (marginal - 1.0).exp().mean(dim=-1)
        elif kind == "wasserstein_kr":
            second = marginal.mean(dim=-1)
        else:
            second = log_mean_exp(marginal) if ema is None else _LogMeanExpEMA.apply(marginal, ema.to(marginal))
        return joint.mean(dim=-1) - second


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], joint_inputs: torch.Tensor,
                     marginal_inputs: torch.Tensor, *, weight: float = 10.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's ``weight * mean((||grad T(x_hat)|| - 1)^2)``, ``x_hat = e x+ + (1 - e) x-``, ``e ~ U[0, 1]`` per row.

    Args:
        critic: inputs [..., n, D] -> scores [..., n], each row scored alone.
        joint_inputs, marginal_inputs: x+, x- [..., n, D], row i paired with row i (detached: trains the critic).
        weight: the penalty's weight (10 in WGAN-GP and methods.md 3.1).
        generator: draws e on the CPU (then moved); None: torch's global RNG.

    Returns:
        The penalty [...] (mean over the n rows), float32, with a graph to the critic's parameters."""
    x_p, x_m = _wide(joint_inputs.detach()), _wide(marginal_inputs.detach())
    e = torch.rand(*x_p.shape[:-1], 1, generator=generator, dtype=x_p.dtype).to(x_p.device)
    x_hat = (e * x_p + (1.0 - e) * x_m).requires_grad_(True)
    with _float32(x_hat), torch.enable_grad():
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return weight * ((grad.norm(dim=-1) - 1.0) ** 2).mean(dim=-1)
