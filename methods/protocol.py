"""The method contract, in one place: what a ``methods/<method>.py`` module provides, and what the loop does
for it so that it never has to.

A method is a module registered in :data:`methods.METHODS` (a module satisfies :class:`Method` through its
functions, as PEP 544 allows). It provides:

- ``build_model(features, *, fields, **params) -> nn.Module``: a fresh model over the input ``fields`` of a
  corpus schema. Every other option is keyword-only with a default; the options are the keys of
  ``experiments.<corpus>.<run>.model`` in params.yaml. The model has a ``label_name`` attribute (the batch
  key of its target; evaluation reads ``"label"`` without one) and moves the batch fields it reads to its
  own parameters' device.
- ``training_step(model, batch, tuples) -> dict``: ``{"loss": scalar tensor, "pred": detached predictions
  [B, ...]}``; more named loss terms may sit beside ``"loss"`` (the one the loop minimises) for logging.
- ``predict(model, batch) -> Tensor``: scores or predictions [B, ...], the input of the corpus task's
  metrics (class probabilities [B, C], values [B], class maps [B, H, W], detections [B, D, 9]).
- ``embed(model, batch) -> Tensor``: one embedding per sample [B, dim] (retrieval, probes, robustness).
- ``describe(model) -> dict[str, float]`` (optional): model-level figures the evaluate stage adds to the run's
  metrics (CM-VQVAE's complementarity).
- ``figures(model, batch, directory) -> list[Path]`` (optional): PNGs of the first test batch the evaluate stage
  writes under ``results/figures/<corpus>/<run>/`` (CM-VQVAE's reconstructions).
- ``fit(model, train_batches, **options) -> history`` (optional): only where the schedule truly differs
  from the loop's (MDM's two-stage update, TupleInfoNCE's bilevel search). It takes the keyword options of
  :func:`methods.loop.fit` and returns the same history dict; ``methods.loop.fit`` hands over to it.

``batch`` is a dict from :func:`mmdata.load`: ``__key__`` (B sample keys), per field a tensor [B, *shape]
(``<field>_lengths`` [B] and ``<field>_mask`` [B, T] for variable-length fields) or a list of B strings.

What :func:`methods.loop.fit` guarantees:

- Seeds: the caller seeds torch before ``build_model`` (the initial weights belong to the experiment), and
  the loop calls ``torch.manual_seed(seed)`` before the first step (dropout and other torch draws).
- Device placement: the model is moved to the device before the first step; batches are not moved (the
  model moves what it reads, so the loop needs no knowledge of a batch's fields, and strings stay on the host).
- AMP: ``training_step`` runs under ``torch.autocast`` when ``amp`` is on (fp16 with loss scaling on CUDA,
  bf16 on CPU); a method computes its loss in float32 (``.float()`` its outputs first).
- Optimiser: AdamW over ``model.parameters()``; the loop zeroes the gradients, back-propagates the (scaled)
  ``"loss"`` and steps. ``training_step`` only computes.
- Modes: ``model.train()`` for training steps; ``model.eval()`` for validation (``training_step`` without
  gradients, for its loss) and evaluation (``predict`` under ``torch.no_grad``). The weights of the best
  validation loss are restored at the end, and the model is left in eval mode.
- Tuples: ``tuples`` is the :class:`~mmdata.types.Tuples` of negatives the run's configured sampler drew for
  this batch (rows index the batch; :func:`methods.loop.batch_tuples`: a function of (seed, epoch, batch index)
  only), or None when the run configures no sampler.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mmdata.types import Features, Tuples

Batch = dict[str, Any]


@runtime_checkable
class Method(Protocol):
    """What every method module provides (see the module docstring for each function's contract)."""

    def build_model(self, features: Features, *, fields: list[str], **params: Any) -> nn.Module:
        """A fresh model over ``fields`` of ``features``; every other option keyword-only with a default."""

    def training_step(self, model: nn.Module, batch: Batch, tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, "pred": [B, ...] detached}`` (plus any named loss terms) for one batch."""

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scores or predictions [B, ...] for the task's metrics."""

    def embed(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """One embedding per sample: [B, dim]."""


@runtime_checkable
class OwnSchedule(Protocol):
    """The optional ``fit`` of a method whose training schedule differs from the loop's."""

    def fit(self, model: nn.Module, train_batches: Iterable[Batch], *, epochs: int, lr: float,
            weight_decay: float = 0.0, device: str | torch.device = "auto", amp: bool | str = False, seed: int = 0,
            valid_batches: Iterable[Batch] | None = None, unlabeled_batches: Iterable[Batch] | None = None,
            sampler: Callable[..., Tuples] | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
        """Train ``model`` in place and return the history dict of :func:`methods.loop.fit`."""
