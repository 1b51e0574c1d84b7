"""The one training loop: device, AMP, optimiser, best-epoch selection, logging and checkpoints.

A method module provides what :mod:`methods.protocol` states (``training_step(model, batch, tuples) ->
{"loss", "pred"}``, ``predict(model, batch)``, ...); its model moves the fields it reads to its own device, so
this loop never needs to know a batch's fields. Batches are re-iterable objects: iterating again is the next
epoch.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.distributed import all_sum, data_parallel
from mmdata.samplers.derange import batch_rng
from mmdata.types import Tuples

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def amp_dtype(device: torch.device, amp: bool | str) -> torch.dtype | None:
    """The autocast dtype for ``amp``: False -> None; True -> fp16 on CUDA, bf16 on CPU; or "fp16"/"bf16".

    Raises:
        ValueError: an unknown ``amp`` string.
    """
    if amp is False or amp is None or amp == "off":
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp not in _AMP_DTYPES:
        raise ValueError(f"amp must be a bool or one of {sorted(_AMP_DTYPES)}, got {amp!r}")
    return _AMP_DTYPES[amp]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _progress(batches: Iterable, desc: str) -> Iterable:
    """tqdm over batches only on an interactive terminal, so DVC logs stay one line per epoch."""
    if not sys.stderr.isatty():
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, leave=False, unit="batch")


def _batch_size(batch: dict[str, Any]) -> int:
    return len(batch["__key__"])


#: ``step(model, batch, tuples) -> {"loss": scalar, ...}``: a method's ``training_step`` or a phase of its own.
Step = Callable[[nn.Module, dict[str, Any], Any], dict[str, torch.Tensor]]
#: ``sampler(n, rng) -> Tuples`` over the rows of a batch of ``n``: a configured :class:`mmdata.samplers.Sampler`.
TupleSampler = Callable[[int, np.random.Generator], Tuples]


def batch_tuples(sampler: TupleSampler | None, batch: dict[str, Any], *, seed: int, epoch: int, index: int,
                 phase: str = "train") -> Tuples | None:
    """The negatives of batch ``index`` of ``epoch`` (None without a sampler).

    Drawn with :func:`mmdata.samplers.batch_rng` from ``(seed, epoch, index, phase)`` only: the same tuples
    for any worker count and after a resume, and on every DDP rank the same function of its own batch.
    """
    if sampler is None:
        return None
    return sampler(_batch_size(batch), batch_rng(seed, epoch, index, phase))


def _train_epoch(step: Step, model: nn.Module, batches: Iterable, opt: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, ctx: Callable, desc: str,
                 tuples_of: Callable[[dict[str, Any], int], Tuples | None]) -> tuple[float, int]:
    """One pass over ``batches``; returns (sample-weighted mean loss, number of samples)."""
    model.train()
    total, count = torch.zeros((), dtype=torch.float64), 0
    for index, batch in enumerate(_progress(batches, desc)):
        with ctx():
            loss = step(model, batch, tuples_of(batch, index))["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        n = _batch_size(batch)
        # Accumulate on the device and read once per epoch: a .item() per batch would stall the GPU.
        total = total.to(loss.device) + loss.detach().double() * n
        count += n
    total, count = all_sum(total, count)  # under DDP: the epoch's mean over every rank's samples
    return _finite_mean(total, count, desc), count


@torch.no_grad()
def _valid_loss(step: Step, model: nn.Module, batches: Iterable, ctx: Callable,
                tuples_of: Callable[[dict[str, Any], int], Tuples | None]) -> float:
    """Sample-weighted mean loss over ``batches`` in eval mode."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), 0
    for index, batch in enumerate(batches):
        with ctx():
            loss = step(model, batch, tuples_of(batch, index))["loss"]
        n = _batch_size(batch)
        total = total.to(loss.device) + loss.double() * n
        count += n
    return _finite_mean(total, count, "validation")


def _finite_mean(total: torch.Tensor, count: int, what: str) -> float:
    if count == 0:
        raise ValueError(f"{what}: the batches yielded no samples")
    mean = float(total) / count
    if not np.isfinite(mean):
        raise FloatingPointError(f"{what}: loss is {mean}; lower lr, check the inputs for inf/nan, or disable amp")
    return mean


def fit(method: ModuleType, model: nn.Module, train_batches: Iterable, *, epochs: int, lr: float,
        weight_decay: float = 0.0, device: str | torch.device = "auto", amp: bool | str = False, seed: int = 0,
        valid_batches: Iterable | None = None, unlabeled_batches: Iterable | None = None,
        sampler: TupleSampler | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train ``model`` with AdamW for ``epochs`` passes over ``train_batches``.

    Args:
        method: a method module providing ``training_step`` (``methods.get_method(name)`` for a registry name;
            the loop does not import the registry, whose methods import the loop).
        model: built by that method's ``build_model``; moved to ``device``. Its initial weights are the
            caller's business (seed before building it); ``seed`` here fixes dropout and other torch draws.
        train_batches: re-iterable batch dicts; ``set_epoch(e)`` is called first when it exists.
        epochs, lr, weight_decay: schedule and AdamW settings.
        device: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
        amp: False, True (fp16 + GradScaler on CUDA, bf16 on CPU), "fp16" or "bf16".
        seed: passed to ``torch.manual_seed``.
        valid_batches: when given, the state with the lowest validation loss is restored at the end.
        unlabeled_batches: batches whose labels a method's own schedule does not read (ReFNet's
            self-supervised pretraining on the whole split when ``train_batches`` is a few-shot subset); the
            loop's own schedule ignores them.
        sampler: draws each batch's negative :class:`~mmdata.types.Tuples` (see :func:`batch_tuples`), passed
            to ``training_step`` as ``tuples``; None passes None.
        log: called with one line per epoch.

    The model is left in eval mode. A method with its own ``fit`` (:class:`methods.protocol.OwnSchedule`)
    gets the same arguments and runs its schedule instead (usually built from :func:`train` phases).

    Returns:
        History: lists ``epoch``, ``train_loss``, ``valid_loss`` (empty without validation), ``seconds``,
        ``samples_per_s``; ``best_epoch`` (None without validation), ``device``, ``amp``.
    """
    own = getattr(method, "fit", None)
    if own is not None and own is not fit:  # a method module that imported this very function must not recurse
        return own(model, train_batches, epochs=epochs, lr=lr, weight_decay=weight_decay, device=device, amp=amp,
                   seed=seed, valid_batches=valid_batches, unlabeled_batches=unlabeled_batches, sampler=sampler,
                   log=log)
    return train(method.training_step, model, train_batches, epochs=epochs, lr=lr, weight_decay=weight_decay,
                 device=device, amp=amp, seed=seed, valid_batches=valid_batches, sampler=sampler, log=log)


def train(step: Step, model: nn.Module, train_batches: Iterable, *, epochs: int, lr: float,
          weight_decay: float = 0.0, device: str | torch.device = "auto", amp: bool | str = False, seed: int = 0,
          valid_batches: Iterable | None = None, sampler: TupleSampler | None = None,
          log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The loop's schedule with any step function: what :func:`fit` runs, and the phases of a method's own
    ``fit`` (ReFNet's pretraining with its refiner-only step, then its supervised step).

    ``step(model, batch, tuples) -> {"loss": scalar, ...}``; the other arguments and the returned history are
    those of :func:`fit`. A fresh AdamW optimiser per call: a phase starts from clean optimiser state.
    """
    torch.manual_seed(seed)
    dev = resolve_device(device)
    dtype = amp_dtype(dev, amp)
    model.to(dev)
    steps = (data_parallel(step, model, dev), step)  # (train, valid): DDP averages the training gradients
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # Loss scaling is only needed (and only supported) for fp16 on CUDA; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16 and dev.type == "cuda")
    ctx = lambda: _autocast(dev, dtype)  # noqa: E731 - a fresh context manager per batch
    hist: dict[str, Any] = {"epoch": [], "train_loss": [], "valid_loss": [], "seconds": [], "samples_per_s": [],
                            "best_epoch": None, "device": str(dev),
                            "amp": "off" if dtype is None else str(dtype).removeprefix("torch.")}
    best_state = None
    for epoch in range(epochs):
        rec = _fit_epoch(steps, model, epoch, train_batches, valid_batches, opt, scaler, ctx, sampler, seed)
        for key, value in rec.items():
            hist[key].append(value)
        best = hist["best_epoch"]
        if "valid_loss" in rec and (best is None or rec["valid_loss"] < hist["valid_loss"][best]):
            # Copied to CPU so that keeping the best state costs no accelerator memory.
            hist["best_epoch"], best_state = epoch, {k: v.detach().to("cpu", copy=True)
                                                     for k, v in model.state_dict().items()}
        log(_format(rec, epochs))
    if best_state is not None:
        model.load_state_dict(best_state)
        log(f"restored epoch {hist['best_epoch'] + 1} (valid_loss={hist['valid_loss'][hist['best_epoch']]:.4f})")
    model.eval()
    return hist


def _fit_epoch(steps: tuple[Step, Step], model: nn.Module, epoch: int, train_batches: Iterable,
               valid_batches: Iterable | None, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               ctx: Callable, sampler: TupleSampler | None, seed: int) -> dict[str, float]:
    """One training epoch plus the optional validation pass (``steps``: train, valid); returns the epoch's record."""
    if hasattr(train_batches, "set_epoch"):
        train_batches.set_epoch(epoch)
    start = time.perf_counter()
    first = _first_index(train_batches, epoch)
    train_loss, n = _train_epoch(steps[0], model, train_batches, opt, scaler, ctx, f"epoch {epoch + 1}",
                                 lambda b, i: batch_tuples(sampler, b, seed=seed, epoch=epoch, index=first + i))
    seconds = time.perf_counter() - start
    rec = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds, "samples_per_s": n / max(seconds, 1e-9)}
    if valid_batches is not None:
        rec["valid_loss"] = _valid_loss(steps[1], model, valid_batches, ctx, lambda b, i: batch_tuples(
            sampler, b, seed=seed, epoch=epoch, index=i, phase="valid"))
    return rec


def _first_index(batches: Iterable, epoch: int) -> int:
    """Index of the first batch the next iteration yields: a loader resumed mid-epoch (``state_dict``) starts
    at its saved batch, so each batch keeps the tuples of its index."""
    state = batches.state_dict() if hasattr(batches, "state_dict") else None
    return int(state["batch"]) if state and state.get("epoch") == epoch else 0


def _format(rec: dict[str, float], epochs: int) -> str:
    valid = f" valid_loss={rec['valid_loss']:.4f}" if "valid_loss" in rec else ""
    return (f"epoch {rec['epoch'] + 1}/{epochs} train_loss={rec['train_loss']:.4f}{valid} "
            f"{rec['seconds']:.1f}s {rec['samples_per_s']:.0f} samples/s")


@torch.no_grad()
def evaluate(method: ModuleType, model: nn.Module, batches: Iterable) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Predictions over ``batches`` in eval mode (the previous train/eval mode is restored afterwards).

    Returns:
        ``(pred, truth, keys)``: pred [N] or [N, C] (whatever ``method.predict`` returns: values, class ids,
        or class scores), truth [N] or [N, C] (``batch[model.label_name]``,
        default "label"), keys: the N sample keys in the same order.
    """
    was_training = model.training
    model.eval()
    label = getattr(model, "label_name", "label")
    preds, truths, keys = [], [], []
    try:
        for batch in batches:
            preds.append(method.predict(model, batch).detach().cpu().numpy())
            y = batch[label]
            truths.append(y.cpu().numpy() if torch.is_tensor(y) else np.asarray(y))
            keys.extend(batch["__key__"])
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("evaluate: the batches yielded no samples")
    return np.concatenate(preds), np.concatenate(truths), keys


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``{"state_dict", "meta"}`` to ``path`` atomically (temp file + rename); ``meta`` must be plain data.

    The same weights give the same bytes: torch.save names the zip's root folder after the file it writes, so
    it writes to a buffer (root "archive") rather than to the randomly named temp file, and DVC sees an
    unchanged model as unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": meta}, buffer)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights saved by :func:`save_checkpoint` into ``model`` (on its device); returns the meta dict."""
    device = next(model.parameters()).device
    ckpt = torch.load(Path(path), map_location=device, weights_only=True)
    model.load_state_dict(ckpt["state_dict"])
    return ckpt["meta"]
