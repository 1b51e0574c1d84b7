"""TupleInfoNCE's sample optimisation (../shared/methods.md 5.2): the cross-modal discrimination reward on a fixed
candidate pool, and REINFORCE over Gaussian policies of the log-ratios and the augmentation strength.

Cross-modal discrimination [P 4.3.1]: for modality k, the query of item i is g(v^k_i, 0) (every other modality a
placeholder) and its candidates are g(0, vbar^k_j) over the pool; ``P(j | i; k) = softmax_j(q_i . c_j / t)``,
``Acc_k = mean_i 1[argmax_j = i]`` (the temperature does not move the argmax), reward ``R(alpha) = sum_k Acc_k``.
The pool is the first ``candidates`` rows of the held-out batches (labels unread), fixed for the whole run,
so chance is ``1 / len(pool)`` per modality (reported; the code's 2-sample batches had 50 % chance).

Strength reward [P Eq. 8]: ``R(a) = -Acc(a, a) - lambda ((a - a_hat) / a_max)^2`` with Acc(a_train, a_val) the
total accuracy on the pool augmented at a_val, ``a_hat = argmax`` of it over :data:`STRENGTH_GRID`, lambda = 1
and a_max = 1 (strengths live in [0, 1]). The code replaced Acc(a, a) by a grid mean; this follows the paper.

Search [P Eqs. 6-7]: each outer epoch samples one action per clone from the policy of one target (the paper:
strength on even epochs, ratios on odd; the code does the reverse), trains every clone from the same snapshot
with a fresh optimiser (the code shared the optimiser state across clones), scores it, updates the policy with
``-sum_b log pi(a_b) (r_b - mean r) / (std r + eps)`` and keeps the best clone as the next snapshot.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from methods.loop import TupleSampler, train
from methods.tuple_contrast import augmented, placeholder_parts, project
from mmdata.rng import make_rng, torch_seed

#: Log-ratio policy: N(log w, RATIO_STD^2 I), Adam lr RATIO_LR (the code: N(1, 0.5 I) on its log2-scale r, lr 0.25).
RATIO_STD, RATIO_LR = 0.5, 0.25
#: Strength policy: N(strength, STRENGTH_STD^2), Adam lr STRENGTH_LR (the code: N(120, var 100) of 255, lr 3).
STRENGTH_STD, STRENGTH_LR = 0.1, 0.05
#: Validation strengths for a_hat, and lambda of Eq. 8 (a_max = 1).
STRENGTH_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
PENALTY = 1.0
EPS = 1e-8
#: The ``search`` option -> the targets its epochs take in turn.
TARGETS = {False: (), True: ("strength", "ratios"), "both": ("strength", "ratios"), "ratios": ("ratios",),
           "strength": ("strength",)}


class GaussianPolicy:
    """A diagonal Gaussian policy N(mean, std^2 I) over a vector of hyperparameters, updated by REINFORCE.

    Attributes:
        mean: float64 ``[P]`` leaf tensor (Adam's parameter); std: fixed float.
    """

    def __init__(self, mean: list[float], std: float, lr: float) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float64, requires_grad=True)
        self.std = float(std)
        self.opt = torch.optim.Adam([self.mean], lr=lr)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` actions, float64 ``[n, P]``."""
        noise = torch.randn(n, len(self.mean), generator=generator, dtype=torch.float64)
        return self.mean.detach() + self.std * noise

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a) of ``[n, P]`` actions, ``[n]`` (differentiable in the mean)."""
        z = (actions - self.mean) / self.std
        return (-0.5 * z ** 2 - np.log(self.std) - 0.5 * np.log(2 * np.pi)).sum(dim=-1)

    def update(self, actions: torch.Tensor, rewards: torch.Tensor | list[float]) -> float:
        """One Adam step on ``-sum_b log pi(a_b) (r_b - mean r) / (std r + eps)`` (population std: equal
        rewards give a zero advantage, hence a zero gradient and no move); returns the loss."""
        r = torch.as_tensor(rewards, dtype=torch.float64)
        advantage = (r - r.mean()) / (r.std(correction=0) + EPS)
        loss = -(self.log_prob(actions) * advantage).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def discrimination_accuracy(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Acc_k = mean_i 1[argmax_j q^k_i . c^k_j = i] for every modality k.

    Args:
        queries: ``[M, N, D]`` g(v^k_i, 0); candidates: ``[M, N, D]`` g(0, vbar^k_j).

    Returns:
        float ``[M]``.
    """
    scores = torch.einsum("mnd,mjd->mnj", queries.float(), candidates.float())
    return (scores.argmax(dim=-1) == torch.arange(scores.shape[1], device=scores.device)).float().mean(dim=-1)


def pool_batches(batches: Iterable, candidates: int) -> list[dict[str, Any]]:
    """The first ``candidates`` rows of ``batches`` in iteration order, as batch dicts (the last one cut)."""
    pool, count = [], 0
    for batch in batches:
        take = min(len(batch["__key__"]), candidates - count)
        pool.append({k: v[:take] for k, v in batch.items()})  # tensors [B, ...] and lists alike
        count += take
        if count >= candidates:
            break
    return pool


@torch.no_grad()
def cross_modal_accuracy(model: Any, pool: list[dict[str, Any]], *, strength: float | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """Cross-modal discrimination of a TupleInfoNCE model on the pool (eval mode; the mode is restored).

    Args:
        strength: validation augmentation of the pool (None: the model's own), drawn per row from
            ``(seed, key)`` so every clone and strength meets the same draws.

    Returns:
        ``{"accuracy": {field: Acc_k}, "reward": sum_k Acc_k, "chance": 1 / N, "candidates": N}``.
    """
    was, saved = model.training, model.strength
    model.eval()
    try:
        model.strength = saved if strength is None else float(min(max(strength, 0.0), 1.0))
        full, blank = [], []
        for batch in pool:
            view = batch if model.strength <= 0 else augmented(
                model.augmenter(), batch, [make_rng(seed, "tupleinfonce_pool", key) for key in batch["__key__"]])
            full.append(model.encode(view))
            blank.append(placeholder_parts(model, batch))
    finally:
        model.strength = saved
        model.train(was)
    fields = model.fields
    full, blank = ({n: torch.cat([p[n] for p in parts]) for n in fields} for parts in (full, blank))
    queries = torch.stack([project(model, {n: full[n] if n == k else blank[n] for n in fields}) for k in fields])
    keys = torch.stack([project(model, {n: blank[n] if n == k else full[n] for n in fields}) for k in fields])
    acc = discrimination_accuracy(queries, keys).tolist()
    return {"accuracy": dict(zip(fields, acc)), "reward": float(sum(acc)), "chance": 1.0 / queries.shape[1],
            "candidates": int(queries.shape[1])}


def strength_reward(model: Any, pool: list[dict[str, Any]], *, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Eq. 8 for the model's strength a: ``-Acc(a, a) - PENALTY (a - a_hat)^2``; returns (reward, details)."""
    grid = {g: cross_modal_accuracy(model, pool, strength=g, seed=seed)["reward"] for g in STRENGTH_GRID}
    a_hat = max(grid, key=grid.get)  # first of the best on ties: the weakest augmentation
    own = cross_modal_accuracy(model, pool, seed=seed)["reward"]
    reward = -own - PENALTY * (model.strength - a_hat) ** 2
    return reward, {"a_hat": a_hat, "accuracy_at_a": own, "grid": {str(g): v for g, v in grid.items()}}


class Positions:
    """Re-iterable batches that record the epoch (the loop calls ``set_epoch``) and the index of the batch being
    yielded, so that a label-free step keys its draws by the loop's position."""

    def __init__(self, batches: Iterable) -> None:
        self.batches, self.epoch, self.index = batches, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __iter__(self):
        for index, batch in enumerate(self.batches):
            self.index = index
            yield batch


#: ``make_step(positions, seed) -> step(model, batch, tuples)``: the pretraining step at the loop's position.
MakeStep = Callable[[Positions, int], Callable[..., dict[str, torch.Tensor]]]


def _apply(model: Any, target: str, action: torch.Tensor) -> None:
    """Set the searched hyperparameter: log-ratios -> ``model.ratios``; strength clipped to [0, 1]."""
    if target == "ratios":
        model.ratios = {n: float(np.exp(a)) for n, a in zip(model.fields, action.tolist())}
    else:
        model.strength = float(min(max(float(action[0]), 0.0), 1.0))


def _policies(model: Any) -> dict[str, GaussianPolicy]:
    return {"ratios": GaussianPolicy([float(np.log(model.ratios[n])) for n in model.fields], RATIO_STD, RATIO_LR),
            "strength": GaussianPolicy([model.strength], STRENGTH_STD, STRENGTH_LR)}


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _clone_rewards(model: Any, batches: Positions, pool: list, make_step: MakeStep, target: str,
                   actions: torch.Tensor, snapshot: dict, *, seed: int, sampler: TupleSampler,
                   options: dict[str, Any]) -> tuple[list[float], list[dict]]:
    """Train one clone per action from ``snapshot`` (a fresh optimiser each) and score it."""
    rewards, states = [], []
    for action in actions:
        model.load_state_dict(snapshot)
        _apply(model, target, action)
        train(make_step(batches, seed), model, batches, epochs=model.inner_epochs, seed=seed, sampler=sampler,
              log=lambda line: None, **options)
        rewards.append(strength_reward(model, pool, seed=seed)[0] if target == "strength"
                       else cross_modal_accuracy(model, pool, seed=seed)["reward"])
        states.append(_state(model))
    return rewards, states


def search(model: Any, batches: Positions, pool: list[dict[str, Any]], make_step: MakeStep, *, seed: int,
           sampler: TupleSampler,
           options: dict[str, Any], log: Callable[[str], Any] = print) -> dict[str, Any]:
    """``model.search_epochs`` outer epochs of REINFORCE over ``model.clones`` clones (see the module doc).

    Args:
        model: a TupleInfoNCE model (its ``search`` names the targets); left with the best clone's weights
            and the policies' means as ``ratios`` / ``strength``.
        batches: :class:`Positions` over the label-free batches.
        pool: the candidate pool (:func:`pool_batches`).
        make_step: the pretraining step at a position (:func:`methods.tupleinfonce.located_step`).
        seed: run seed; epoch e trains its clones under ``torch_seed(seed, "tupleinfonce_search", e)``, the same
            batches, views, dropout and tuples for every clone (common random numbers).
        sampler, options: the negatives and the loop options (lr, weight_decay, device, amp).

    Returns:
        ``{"schedule", "epochs": [{"epoch", "target", "actions", "rewards", "best", "mean"}], "chance",
        "ratios", "strength"}`` (plain values).
    """
    targets, policies = TARGETS[model.search], _policies(model)
    generator = torch.Generator().manual_seed(torch_seed(seed, "tupleinfonce_policy"))
    snapshot, epochs = _state(model), []
    for e in range(model.search_epochs):
        target = targets[e % len(targets)]  # "both": strength on even epochs, ratios on odd (the paper)
        actions = policies[target].sample(model.clones, generator)
        rewards, states = _clone_rewards(model, batches, pool, make_step, target, actions, snapshot,
                                         seed=torch_seed(seed, "tupleinfonce_search", e), sampler=sampler,
                                         options=options)
        policies[target].update(actions, rewards)
        best = int(np.argmax(rewards))
        snapshot = states[best]
        _apply(model, target, policies[target].mean.detach())
        epochs.append({"epoch": e, "target": target, "actions": actions.tolist(), "rewards": rewards, "best": best,
                       "mean": policies[target].mean.tolist()})
        log(f"search {e + 1}/{model.search_epochs} {target}: rewards {np.round(rewards, 3).tolist()}, best clone "
            f"{best}; ratios {model.ratios} strength {model.strength:.3f}")
    model.load_state_dict(snapshot)  # the best clone, whose buffers hold its own action: set the means again
    for target in targets:
        _apply(model, target, policies[target].mean.detach())
    return {"schedule": "strength on even epochs, ratios on odd (the paper; the official code does the reverse)",
            "epochs": epochs, "chance": 1.0 / sum(len(b["__key__"]) for b in pool), "ratios": dict(model.ratios),
            "strength": model.strength}
