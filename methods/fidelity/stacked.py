"""Train many small models of one architecture at once: stacked parameters, ``torch.func.vmap``.

A controlled check runs the same model on tens of independent synthetic trials. A Python loop over trials
pays torch's per-call overhead once per trial and step; here the trials' parameters are stacked
(``torch.func.stack_module_state``: every tensor gains a leading [T] axis) and one vmapped
``functional_call`` runs every trial's training step together. The loss handed to autograd is the *sum* of
the per-trial losses, so each trial's slice of the gradient is exactly its own loss's gradient; Adam is
elementwise (its moments, bias corrections and step are per entry), so one Adam over the stacked tensors
updates every trial exactly as its own Adam would. Only floating-point rounding of the batched matmuls
differs from a per-trial loop (tests/test_fidelity.py checks the two against each other).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

#: One trial's input tensors by batch key (``{"feat_a": [N, D], "label": [N]}``); stacked: [T, N, ...].
Arrays = dict[str, torch.Tensor]


class _Step(nn.Module):
    """``method.training_step(model, batch)["loss"]`` as a module, so ``functional_call`` can swap the model's
    parameters for one trial's slice (the method's own loss, not a copy of it)."""

    def __init__(self, method: ModuleType, model: nn.Module) -> None:
        super().__init__()
        self.method, self.model = method, model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.method.training_step(self.model, batch)["loss"]


def batch_order(n: int, steps: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Sample indices for ``steps`` mini-batches: epochs of fresh permutations of range(n), laid end to end and
    cut into batches (a batch may straddle two epochs; every sample is seen equally often).

    Returns:
        int64 [steps, batch_size].
    """
    epochs = -(-steps * batch_size // n)
    flat = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    return flat[: steps * batch_size].view(steps, batch_size)


def _take(arrays: Arrays, index: torch.Tensor) -> Arrays:
    """Rows ``index`` [T, B] of stacked arrays [T, N, ...] -> [T, B, ...]."""
    rows = torch.arange(index.shape[0])[:, None]
    return {key: value[rows, index] for key, value in arrays.items()}


def stacked_loss(method: ModuleType, model: nn.Module) -> Callable[..., torch.Tensor]:
    """``loss(params, buffers, batch) -> [T]``: the method's training loss of every trial on its own batch.

    Args:
        method: a method module (its ``training_step`` gives the loss).
        model: one instance of the architecture (its own weights are not used; only its structure).
    """
    step = _Step(method, model)

    def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], batch: Arrays) -> torch.Tensor:
        named = {**{f"model.{k}": v for k, v in params.items()}, **{f"model.{k}": v for k, v in buffers.items()}}
        return functional_call(step, named, (batch,))

    return vmap(one)


#: ``callback(steps_done, params, buffers)``, called after every step of :func:`train_stacked`.
Callback = Callable[[int, dict[str, torch.Tensor], dict[str, torch.Tensor]], None]


def train_stacked(method: ModuleType, models: list[nn.Module], train: Arrays, order: torch.Tensor, *,
                  lr: float = 1e-3, callback: Callback | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train T models of one architecture, one per trial, with Adam on their own data and batch order.

    Args:
        method: the models' method module (``training_step`` is the loss).
        models: T freshly built models (their initial weights are each trial's initial weights).
        train: stacked training arrays {key: [T, N, ...]}.
        order: sample indices [T, steps, B] (see :func:`batch_order`).
        lr: Adam learning rate (torch defaults otherwise, as the per-trial reference uses).
        callback: called after each step with the number of steps done and the (live) stacked state, e.g. to
            evaluate at checkpoints; it must not modify the state.

    Returns:
        ``(params, buffers)``: the trained stacked state, {name: [T, ...]}.
    """
    params, buffers = stack_module_state(models)  # leaves with requires_grad, [T, ...] each
    loss_of = stacked_loss(method, models[0])
    for model in models:
        model.train()
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    for step in range(order.shape[1]):
        loss = loss_of(params, buffers, _take(train, order[:, step])).sum()  # sum: per-trial gradients
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step + 1, params, buffers)
    return {k: v.detach() for k, v in params.items()}, buffers


@torch.no_grad()
def predict_stacked(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    inputs: Arrays) -> torch.Tensor:
    """Every trial's model output on its own inputs, in eval mode.

    Args:
        model: one instance of the architecture (structure only).
        params, buffers: stacked state from :func:`train_stacked`, {name: [T, ...]}.
        inputs: stacked input arrays {key: [T, N, ...]}.

    Returns:
        [T, N, ...]: ``model(batch)`` per trial (values [T, N] for a regression head).
    """
    model.eval()

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], batch: Arrays) -> torch.Tensor:
        return functional_call(model, {**p, **b}, (batch,))

    return vmap(one)(params, buffers, inputs)


def train_each(method: ModuleType, models: list[nn.Module], train: Arrays, order: torch.Tensor, *,
               lr: float = 1e-3) -> Iterator[nn.Module]:
    """The plain reference: each model trained alone with its own Adam on the same batches as
    :func:`train_stacked` (slow; for tests and for architectures vmap cannot run). Yields the trained models."""
    for t, model in enumerate(models):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for step in range(order.shape[1]):
            index = order[t, step]
            loss = method.training_step(model, {k: v[t, index] for k, v in train.items()})["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        yield model


def unstack(params: dict[str, Any], t: int) -> dict[str, torch.Tensor]:
    """Trial ``t``'s slice of a stacked state dict (compare with ``model.state_dict()``)."""
    return {k: v[t] for k, v in params.items()}
