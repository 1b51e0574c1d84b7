"""MDM: mutual dependency maximisation (Colombo et al. 2021; ../shared/methods.md 3, 7.4).

A base late-fusion model (:mod:`methods.late_fusion`, any fusion) plus a statistic network T_theta (a critic)
on the concatenated unimodal representations z = [z_1; ...; z_M] (``model.encode``). The model minimises

    L = L_task - lambda * I_hat(T_theta),   I_hat = dependency_bound(T(z joint), T(z negatives), bound)

with negatives from ``marginal_permute`` (a derangement per modality inside the batch: a sample of the product
of marginals). :func:`fit` is Algorithm 1: per batch, ``unroll`` critic ascent steps on detached
representations (its own Adam), then one model step on L with the critic frozen, the bound's gradient reaching
the encoders through joint and permuted representations alike. ``bound="none"`` is exactly late fusion.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from methods import distributed, late_fusion
from methods.heads import target, task_loss, task_pred
from methods.late_fusion import LateFusion
from methods.loop import TupleSampler, train
from methods.losses import DEPENDENCY_BOUNDS, MovingAverage, dependency_bound, gradient_penalty
from mmdata.rng import torch_seed
from mmdata.samplers import Sampler, batch_rng, gather, marginal_permute
from mmdata.types import Features, Tuples

#: The ``bound`` option: a :data:`methods.losses.DEPENDENCY_BOUNDS` key, or "none" (plain late fusion, L_empty).
BOUNDS = (*DEPENDENCY_BOUNDS, "none")
#: Bounds whose critic is kept 1-Lipschitz by the gradient penalty.
LIPSCHITZ = ("wasserstein", "wasserstein_kr")


class StatisticNetwork(nn.Module):
    """T_theta: Linear-ReLU-Linear-ReLU-Linear, [..., D] -> scores [...]; ``spectral_norm`` wraps every Linear in
    torch's spectral-norm parametrisation (each layer's Lipschitz constant <= 1, so the network's is too)."""

    def __init__(self, in_dim: int, hidden: int = 128, *, spectral_norm: bool = False) -> None:
        super().__init__()
        layers = [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)]
        self.net = nn.Sequential(*[_spectral_norm(m) if spectral_norm and isinstance(m, nn.Linear) else m
                                   for m in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class MDM(nn.Module):
    """A :class:`~methods.late_fusion.LateFusion` base plus the critic (see :data:`DELEGATED`).

    Attributes:
        base: the late-fusion model, the only part used at inference.
        critic: T_theta on [..., sum of field dims] (None for ``bound="none"``).
        bound, weight, unroll, critic_lr, gradient_penalty, mine_ema, fixed_negatives: see :func:`build_model`.
    """

    def __init__(self, base: LateFusion, critic: StatisticNetwork | None, **options: Any) -> None:
        super().__init__()
        self.base, self.critic = base, critic
        for key in ("bound", "weight", "unroll", "critic_lr", "gradient_penalty", "mine_ema", "fixed_negatives"):
            setattr(self, key, options[key])

    #: The base's attributes and methods read through the wrapper (``fields``, ``label_name``, ``task``, ...,
    #: ``encode`` {field: [B, dim]}, ``embed`` [B, hidden], ``output``), so late-fusion code takes an MDM as is.
    DELEGATED = frozenset({"fields", "features", "label_name", "task", "regression_loss", "fusion", "device", "encode",
                           "embed", "output"})

    def __getattr__(self, name: str) -> Any:
        if name in MDM.DELEGATED:
            return getattr(self._modules["base"], name)
        return super().__getattr__(name)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The base model's output: logits [B, C] or values [B]."""
        return self.base(batch)


def build_model(features: Features, *, fields: list[str], dim: int = 64, hidden: int = 128, dropout: float = 0.1,
                fusion: str = "concat", fusion_options: dict[str, Any] | None = None, sequence: str = "sequence",
                regression_loss: str = "l1", text_ngrams: int = 2, bound: str = "dv", weight: float = 0.1,
                unroll: int = 5, critic_lr: float = 1e-4, critic_hidden: int = 128, gradient_penalty: float = 10.0,
                spectral_norm: bool = False, mine_ema: float | None = None, fixed_negatives: bool = False) -> MDM:
    """MDM over a late-fusion base with any fusion (defaults: methods.md 3.1's recommended values).

    Args:
        features, fields, dim, hidden, dropout, fusion, fusion_options, sequence, regression_loss, text_ngrams:
            the base's options (:func:`methods.late_fusion.build_model`).
        bound: "dv" (the slides' L_kl), "nwj" (L_f), "wasserstein" (L_W read as W-b: DV with a Lipschitz
            critic), "wasserstein_kr" (W-a) or "none" (no penalty: exactly the base model's training).
        weight: lambda (methods.md suggests sweeping {0.01, 0.1, 1}).
        unroll: critic ascent steps per batch (Algorithm 1's Unroll).
        critic_lr: the critic's Adam learning rate. critic_hidden: its width (two hidden layers).
        gradient_penalty: weight of the critic's gradient penalty, for the Wasserstein bounds (0: none).
        spectral_norm: spectrally normalise the critic's layers (another Lipschitz constraint, any bound).
        mine_ema: MINE's moving-average rate for the critic's DV gradient (0.01 in MINE); None: plain LME.
        fixed_negatives: reuse one fixed set of in-batch derangements for every batch, the paper's fixed
            permutations declared on the batch positions [1, m] (default: fresh derangements per batch).

    Raises:
        ValueError: a bad base option, an unknown bound, a bound with fewer than 2 fields, ``mine_ema`` with
            a bound without a log-mean-exp term, or out-of-range numbers.
    """
    base = late_fusion.build_model(features, fields=fields, dim=dim, hidden=hidden, dropout=dropout, fusion=fusion,
                                   fusion_options=fusion_options, sequence=sequence, regression_loss=regression_loss,
                                   text_ngrams=text_ngrams)
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound {bound!r}; known: {', '.join(BOUNDS)}")
    if bound != "none" and len(base.fields) < 2:
        raise ValueError(f"mdm bound {bound!r} measures the dependency between fields and needs at least 2, got "
                         f"{list(base.fields)}; use bound='none' (or late_fusion) for one field")
    if mine_ema is not None and (bound not in ("dv", "wasserstein") or not 0.0 < mine_ema <= 1.0):
        raise ValueError(f"mine_ema must be a rate in (0, 1] with bound dv or wasserstein, got {mine_ema} with "
                         f"{bound!r}")
    if weight < 0 or unroll < 0 or critic_lr <= 0 or gradient_penalty < 0:
        raise ValueError(f"weight, unroll and gradient_penalty must be >= 0 and critic_lr > 0, got weight={weight}, "
                         f"unroll={unroll}, critic_lr={critic_lr}, gradient_penalty={gradient_penalty}")
    # Built after the base, so that the base's initial weights equal a late-fusion model's of the same seed.
    critic = None if bound == "none" else StatisticNetwork(dim * len(base.fields), critic_hidden,
                                                           spectral_norm=spectral_norm)
    return MDM(base, critic, bound=bound, weight=float(weight), unroll=int(unroll), critic_lr=float(critic_lr),
               gradient_penalty=float(gradient_penalty), mine_ema=mine_ema, fixed_negatives=bool(fixed_negatives))


def joint_and_negatives(parts: dict[str, torch.Tensor], fields: Iterable[str],
                        tuples: Tuples) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's inputs: joint rows [B, D] (``parts`` concatenated in ``fields`` order) and negatives
    [B * k, D] (negative j of row b, at row ``b * k + j``, takes each field from row ``tuples.idx[b, j, m]``).

    Raises:
        ValueError: a field the tuples do not cover.
    """
    missing = sorted(set(fields) - set(tuples.modalities))
    if missing:
        raise ValueError(f"the negative tuples cover {list(tuples.modalities)}, not the fields {missing}")
    taken = gather({n: parts[n] for n in fields}, tuples)
    joint = torch.cat([parts[n] for n in fields], dim=-1)
    return joint, torch.cat([taken[n] for n in fields], dim=-1).flatten(0, 1)


def critic_loss(critic: Callable[[torch.Tensor], torch.Tensor], joint: torch.Tensor, negatives: torch.Tensor,
                bound: str, *, penalty: float = 0.0, generator: torch.Generator | None = None,
                average: MovingAverage | None = None) -> torch.Tensor:
    """What the critic minimises: ``-bound + gradient penalty`` (the penalty only for :data:`LIPSCHITZ` bounds).

    Args:
        critic: [..., n, D] -> [..., n] (one :class:`StatisticNetwork`, or stacked ones for the fidelity check).
        joint: [..., n, D]; negatives: [..., n * k, D] (row ``b * k + j`` is negative j of joint row b).
        bound: a key of :data:`methods.losses.DEPENDENCY_BOUNDS`.
        penalty, generator: the gradient penalty's weight and interpolation draws.
        average: MINE's moving average, updated here with this batch (dv and wasserstein only).

    Returns:
        [...] (a scalar for one critic), float32."""
    scores = critic(negatives)
    loss = -dependency_bound(critic(joint), scores, bound, ema=None if average is None else average.update(scores))
    if bound in LIPSCHITZ and penalty > 0:
        paired = joint.repeat_interleave(negatives.shape[-2] // joint.shape[-2], dim=-2)
        loss = loss + gradient_penalty(critic, paired, negatives, weight=penalty, generator=generator)
    return loss


def _frozen(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The critic's scores [...] with its parameters detached (the model step: gradient to ``x`` only)."""
    return functional_call(critic, {n: p.detach() for n, p in critic.named_parameters()}, (x,))


def _losses(model: MDM, batch: dict[str, Any], parts: dict[str, torch.Tensor],
            tuples: Tuples | None) -> dict[str, torch.Tensor]:
    """``{"loss", "pred", "task_loss", "bound"}`` from already encoded ``parts`` (see :func:`training_step`)."""
    out = model.output(model.fusion(parts)).float()  # float: the loss is computed in fp32 under autocast
    y = target(batch, model.label_name, model.task, model.device)
    task = task_loss(model.task, out, y, model.regression_loss)
    bound = torch.zeros((), device=out.device)
    if model.bound != "none":
        if tuples is None:  # a call outside fit (the contract test): deterministic derangements
            tuples = marginal_permute(out.shape[0], batch_rng(0, 0, 0, "mdm"), modalities=model.fields)
        joint, negatives = joint_and_negatives(parts, model.fields, tuples)
        with torch.autocast(device_type=out.device.type, enabled=False):
            bound = dependency_bound(_frozen(model.critic, joint.float()), _frozen(model.critic, negatives.float()),
                                     model.bound)
    loss = task - model.weight * bound if model.bound != "none" else task
    return {"loss": loss, "pred": task_pred(model.task, out), "task_loss": task.detach(), "bound": bound.detach()}


def training_step(model: MDM, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """The model step's loss ``L_task - lambda * bound`` (critic frozen), the bound estimated on the negatives
    ``tuples`` (in-batch rows; None: fixed derangements from ``batch_rng(0, 0, 0, "mdm")``).

    Returns:
        ``{"loss", "pred", "task_loss", "bound"}``: the last two detached (bound 0 for ``bound="none"``)."""
    return _losses(model, batch, model.encode(batch), tuples)


@torch.no_grad()
def predict(model: MDM, batch: dict[str, Any]) -> torch.Tensor:
    """The base model's scores: see :func:`methods.late_fusion.predict`."""
    return late_fusion.predict(model.base, batch)


def embed(model: MDM, batch: dict[str, Any]) -> torch.Tensor:
    """The base's fused embedding [B, hidden]."""
    return late_fusion.embed(model.base, batch)


class _Fixed:
    """A sampler that keeps its first draw for each batch size (``fixed_negatives``)."""

    def __init__(self, sampler: TupleSampler) -> None:
        self.sampler, self.drawn = sampler, {}

    def __call__(self, n: int, rng: np.random.Generator) -> Tuples:
        if n not in self.drawn:
            self.drawn[n] = self.sampler(n, rng)
        return self.drawn[n]


class _Epochs:
    """The train batches, plus the bound of every model step by epoch (``loop.train`` calls ``set_epoch``)."""

    def __init__(self, batches: Iterable) -> None:
        self.batches, self.train, self.valid = batches, [], []

    def set_epoch(self, epoch: int) -> None:
        self.train.append([])
        self.valid.append([])
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        return iter(self.batches)

    def __getattr__(self, name: str) -> Any:  # state_dict and the like: the wrapped batches'
        return getattr(self.__dict__["batches"], name)


def critic_steps(model: MDM, joint: torch.Tensor, negatives: torch.Tensor, opt: torch.optim.Optimizer,
                 generator: torch.Generator, average: MovingAverage | None) -> None:
    """``model.unroll`` Adam steps of the critic on detached joint [B, D] and negatives [B * k, D], float32.

    Under DDP the critic's gradients are averaged over the ranks here (each rank holds a share of the batch), so
    the critics stay identical; ``autograd.grad`` rather than ``backward``, as these steps run inside the model
    step's DDP forward, whose gradient hooks must fire only for the model step's own backward."""
    joint, negatives = joint.detach().float(), negatives.detach().float()
    params = [p for p in model.critic.parameters() if p.requires_grad]
    with torch.autocast(device_type=joint.device.type, enabled=False):
        for _ in range(model.unroll):
            loss = critic_loss(model.critic, joint, negatives, model.bound, penalty=model.gradient_penalty,
                               generator=generator, average=average)
            grads = distributed.all_mean(torch.autograd.grad(loss, params))
            for param, grad in zip(params, grads):
                param.grad = grad
            opt.step()


def fit(model: MDM, train_batches: Iterable, *, epochs: int, lr: float, weight_decay: float = 0.0,
        device: str | torch.device = "auto", amp: bool | str = False, seed: int = 0,
        valid_batches: Iterable | None = None, unlabeled_batches: Iterable | None = None,
        sampler: TupleSampler | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Algorithm 1 inside :func:`methods.loop.train` (its AdamW, AMP, validation, best-epoch restore, history).

    Per training batch: the tuples (``sampler``, or a fresh ``marginal_permute`` derangement per modality when
    None; the first draw per batch size kept for ``fixed_negatives``), ``unroll`` critic steps (Adam at
    ``critic_lr``; gradient penalty drawn from a generator seeded by ``seed``), then the loop's model step on
    :func:`training_step`'s loss (the critic, frozen there, takes no AdamW step). ``valid_loss`` is the
    validation *task* loss (the selection criterion, as for late fusion: the bound of a critic that keeps
    training is not comparable across epochs). Arguments: those of :func:`methods.loop.fit` (no
    ``unlabeled_batches`` phase).

    Returns:
        The loop's history plus ``bound_kind`` (the bound's name) and per epoch ``bound`` / ``valid_bound``: the
        bound's mean over the epoch's model steps / validation batches (0 for ``bound="none"``).
    """
    sampler = sampler or Sampler("marginal_permute", {"modalities": list(model.fields), "num_negatives": 1})
    sampler = None if model.bound == "none" else _Fixed(sampler) if model.fixed_negatives else sampler
    opt = torch.optim.Adam(model.critic.parameters(), lr=model.critic_lr) if model.critic is not None else None
    generator = torch.Generator().manual_seed(torch_seed(seed, "mdm", "gradient_penalty"))
    average = MovingAverage(model.mine_ema) if model.mine_ema else None
    epochs_seen = _Epochs(train_batches)

    def step(m: MDM, batch: dict[str, Any], tuples: Tuples) -> dict[str, torch.Tensor]:
        parts = m.encode(batch)
        if m.training and opt is not None:
            critic_steps(m, *joint_and_negatives(parts, m.fields, tuples), opt, generator, average)
        out = _losses(m, batch, parts, tuples)
        (epochs_seen.train if m.training else epochs_seen.valid)[-1].append(out["bound"])
        return out if m.training else {**out, "loss": out["task_loss"]}

    def on_line(line: str) -> None:  # the loop's epoch line, plus the epoch's mean bound
        log(f"{line} bound[{model.bound}]={_mean(epochs_seen.train[-1]):.4f}" if line.startswith("epoch") else line)

    history = train(step, model, epochs_seen, epochs=epochs, lr=lr, weight_decay=weight_decay, device=device,
                    amp=amp, seed=seed, valid_batches=valid_batches, sampler=sampler, log=on_line)
    history.update(bound_kind=model.bound, bound=[_mean(v) for v in epochs_seen.train],
                   valid_bound=[_mean(v) for v in epochs_seen.valid if v])
    return history


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).double().mean()) if values else float("nan")
