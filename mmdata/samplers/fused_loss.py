"""The tuple InfoNCE loss as one fused CPU kernel per direction (numba), for :func:`mmdata.samplers.tuple_infonce`.

The composed torch form takes about 17 tensor calls forward; on CPU each costs a few microseconds whatever its
size, so at batch 32 the calls, not the arithmetic, set the cost (~130 us for 0.26 MB of negatives). Here one
pass over each negative row computes its dot with the anchor and its squared norm together (the row stays in
L1), a short scalar pass the logits and their log-sum-exp, and the backward one more pass that writes each
gradient row once. The arithmetic is the composed form's (cosine = dot / (max(|a|, eps) max(|x|, eps)); no
gradient through a clamped norm; a masked negative scores -inf and gets a zero gradient), with float32 sums
reassociated for SIMD, so values agree to float rounding (tests/test_fused_loss.py).

Forward / forward + backward, in us, at batch 32, 128, 256 (d = 128, k = 16, warm caches, the 2-core machine of
bench/results): composed 135 / 720, 186 / 1850, 266 / 3370; fused 30 / 220, 57 / 300, 95 / 420 (most of the fused
forward + backward is autograd's own bookkeeping). bench/samplers.py times them against loading the batch.

numba is installed with librosa (its dependency); it is imported on the first call only, and the compiled kernels
are cached beside this file (``__pycache__``, numba's ``cache=True``).
"""
from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

#: dtypes the kernels are compiled for; anything else (or any non-CPU tensor) takes the composed torch form.
DTYPES = (torch.float32, torch.float64)
#: Tensor types the kernels take (a subclass, e.g. under vmap or a tensor wrapper, must see torch operations).
PLAIN = (torch.Tensor, torch.nn.Parameter)
#: The ``keep`` the kernels get without a mask (they read it only when told there is one).
_ALL_KEPT = np.ones((0, 0), np.bool_)


def applies(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> bool:
    """Whether the fused kernels can run on these tensors: plain CPU tensors of one dtype in :data:`DTYPES`,
    outside TorchScript and torch.compile (which must see torch operations)."""
    dtype = anchor.dtype  # written out, not looped: this check runs on every call (~1 us saved)
    return (dtype in DTYPES and positive.dtype == dtype and negatives.dtype == dtype
            and anchor.is_cpu and positive.is_cpu and negatives.is_cpu
            and type(anchor) in PLAIN and type(positive) in PLAIN and type(negatives) in PLAIN
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def tuple_infonce_fused(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                        keep: torch.Tensor | None, *, temperature: float, cosine: bool, eps: float) -> torch.Tensor:
    """``[n]`` per-anchor loss of ``anchor, positive [n, d]``, ``negatives [n, k, d]``, ``keep`` bool ``[n, k]``
    (None = all kept; broadcast), norms clamped at ``eps``; differentiable once (a second derivative needs the
    composed form)."""
    if keep is not None:
        keep = np.ascontiguousarray(np.broadcast_to(_array(keep.to("cpu", torch.bool)), negatives.shape[:2]))
    settings = (1.0 / temperature, eps, cosine, keep is not None)
    keep = _ALL_KEPT if keep is None else keep
    if torch.is_grad_enabled() and (anchor.requires_grad or positive.requires_grad or negatives.requires_grad):
        return _TupleInfoNCE.apply(anchor, positive, negatives, keep, settings)
    # Nothing to differentiate: the kernel alone (autograd.Function's bookkeeping costs twice the kernel at n=32).
    return torch.from_numpy(_forward([_array(anchor), _array(positive), _array(negatives)], keep, settings)[0])


class _TupleInfoNCE(torch.autograd.Function):
    """Forward and backward of the tuple loss; keeps the ``[n, 1 + k]`` logits and softmax and ``[n, 2 + k]`` norms."""

    @staticmethod
    def forward(ctx, anchor, positive, negatives, keep, settings):  # noqa: D102 (see the class)
        inputs = [_array(anchor), _array(positive), _array(negatives)]
        loss, logits, soft, norms = _forward(inputs, keep, settings)
        ctx.save_for_backward(anchor, positive, negatives)  # so that autograd catches an in-place change to them
        ctx.arrays, ctx.settings = (*inputs, keep, logits, norms, soft), settings
        return torch.from_numpy(loss)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 (see the class)
        if torch.is_grad_enabled():  # create_graph=True: its second derivative would be silently missing
            raise RuntimeError('tuple_infonce\'s fused kernel is differentiable once; for second derivatives (e.g. a '
                               'gradient penalty through the loss) call it with kernel="torch"')
        anchor = ctx.saved_tensors[0]  # reading them runs autograd's in-place check; the kernel reads the arrays
        wanted = ctx.needs_input_grad[:3]
        grads = [np.empty_like(x) if want else np.empty((0,) * x.ndim, x.dtype) for x, want in zip(ctx.arrays, wanted)]
        _kernels()[1](_array(grad.to(anchor.dtype)), *ctx.arrays, *grads, *ctx.settings, *wanted)
        return (*(torch.from_numpy(g) if want else None for g, want in zip(grads, wanted)), None, None)


def _forward(inputs: list[np.ndarray], keep: np.ndarray, settings: tuple) -> tuple[np.ndarray, ...]:
    """Run the forward kernel on ``[anchor, positive, negatives]``: ``loss [n]`` and what the backward reads
    (``logits``, ``soft [n, 1 + k]``, ``norms [n, 2 + k]``)."""
    a, p, neg = inputs
    n, k = neg.shape[:2]
    dtype = a.dtype
    loss, logits, soft, norms = (np.empty(n, dtype), np.empty((n, 1 + k), dtype), np.empty((n, 1 + k), dtype),
                                 np.empty((n, 2 + k), dtype))
    _kernels()[0](a, p, neg, keep, logits, norms, soft, loss, *settings)
    return loss, logits, soft, norms


def _array(t: torch.Tensor) -> np.ndarray:
    """C-contiguous numpy view of a CPU tensor (a copy only if it is strided)."""
    return np.ascontiguousarray((t.detach() if t.requires_grad else t).numpy())


@cache
def _kernels():
    """Compile (or load from numba's cache) and return ``(forward, backward)``; numba is imported here so that
    importing mmdata never pays for it."""
    import numba

    # Reassociating float sums lets LLVM vectorise the dots; no "fast" flags that assume finite values (-inf
    # marks a masked negative).
    jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    return jit(_forward_kernel), jit(_backward_kernel)


def _forward_kernel(a, p, neg, keep, logits, norms, soft, loss, inv_t, eps, cosine, masked):
    """Fill ``logits [n, 1 + k]`` (positive first; -inf where ``masked`` and not ``keep``), ``norms [n, 2 + k]``
    (anchor, positive, negatives; clamped at ``eps``; 1 for "dot"), their softmax ``soft [n, 1 + k]`` and
    ``loss [n]`` (log-sum-exp of the logits minus the positive's)."""
    n, k, d = neg.shape
    zero = a.dtype.type(0)  # sums in the input's dtype: float32 sums vectorise 8-wide
    for b in range(n):  # the hot loops: one pass over each row for its dot with the anchor and its squared norm
        dot, sa, sp = zero, zero, zero
        for i in range(d):
            dot += a[b, i] * p[b, i]
            sa += a[b, i] * a[b, i]
            sp += p[b, i] * p[b, i]
        logits[b, 0], norms[b, 0], norms[b, 1] = dot, sa, sp
        for j in range(k):
            dot, sq = zero, zero
            for i in range(d):
                dot += a[b, i] * neg[b, j, i]
                sq += neg[b, j, i] * neg[b, j, i]
            logits[b, 1 + j], norms[b, 2 + j] = dot, sq
    real, eps_, inv_t_ = a.dtype.type, a.dtype.type(eps), a.dtype.type(inv_t)
    for b in range(n):  # the scalar tail, apart so that the hot loops stay tight; all in the input's dtype
        for j in range(k + 2):
            norms[b, j] = max(math.sqrt(norms[b, j]), eps_) if cosine else 1
        scale = inv_t_ / norms[b, 0]
        top = logits[b, 0] = real(logits[b, 0] / norms[b, 1] * scale)
        for j in range(1, k + 1):
            logits[b, j] = logits[b, j] / norms[b, 1 + j] * scale if not masked or keep[b, j - 1] else -np.inf
            top = max(top, logits[b, j])
        total = zero
        for j in range(k + 1):  # float32 exp is ~2x cheaper than float64
            soft[b, j] = math.exp(logits[b, j] - top)
            total += soft[b, j]
        share = 1 / total
        for j in range(k + 1):
            soft[b, j] *= share
        loss[b] = top + math.log(total) - logits[b, 0]


def _backward_kernel(grad, a, p, neg, keep, logits, norms, soft, ga, gp, gn, inv_t, eps, cosine, masked,
                     want_a, want_p, want_n):
    """Gradients of ``sum(grad * loss)`` into ``ga, gp [n, d]`` and ``gn [n, k, d]`` (each only if wanted).

    With ``w_j = grad_b (softmax_j - [j = 0]) / t`` and ``c_j`` the cosine of candidate ``x_j`` (positive, then
    negatives): ``d/da = sum_j w_j (x_j / (|a||x_j|) - c_j a / |a|^2)`` and ``d/dx_j = w_j (a / (|a||x_j|) -
    c_j x_j / |x_j|^2)``, dropping a ``c`` term whose norm was clamped at ``eps``; for "dot" (norms 1, no ``c``
    terms), ``sum_j w_j x_j`` and ``w_j a``. A masked negative gets a zero row.
    """
    n, k, d = neg.shape
    real, eps_ = a.dtype.type, a.dtype.type(eps)  # coefficients in the input's dtype, or row products widen
    acc = np.zeros(d, a.dtype)  # the anchor's gradient row, summed over candidates
    for b in range(n):
        na = norms[b, 0]
        radial = 0.0  # sum_j w_j c_j: the anchor's own-direction term
        acc[:] = 0
        for j in range(k + 1):
            live = j == 0 or not masked or keep[b, j - 1]
            w = grad[b] * (soft[b, j] - (1.0 if j == 0 else 0.0)) * inv_t if live else 0.0
            nx = norms[b, 1 + j]
            c = logits[b, j] / inv_t if cosine and live else 0.0
            radial += w * c
            along = real(w / (na * nx))
            own = real(w * c / (nx * nx) if cosine and nx > eps_ else 0.0)
            if j == 0:
                if want_a:
                    for i in range(d):
                        acc[i] += along * p[b, i]
                if want_p:
                    for i in range(d):
                        gp[b, i] = along * a[b, i] - own * p[b, i]
            else:
                if want_a:
                    for i in range(d):
                        acc[i] += along * neg[b, j - 1, i]
                if want_n:
                    for i in range(d):
                        gn[b, j - 1, i] = along * a[b, i] - own * neg[b, j - 1, i]
        if want_a:
            inward = real(radial / (na * na) if cosine and na > eps_ else 0.0)
            for i in range(d):
                ga[b, i] = acc[i] - inward * a[b, i]
