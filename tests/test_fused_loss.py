"""The fused CPU kernels of ``tuple_infonce`` (mmdata/samplers/fused_loss.py) against its composed torch form."""
from __future__ import annotations

import pytest
import torch

from mmdata.samplers import tuple_infonce
from mmdata.samplers.fused_loss import applies

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def _inputs(n: int, k: int, d: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    anchor, positive, negatives = (torch.randn(*shape, generator=g, dtype=dtype)
                                   for shape in ((n, d), (n, d), (n, k, d)))
    if n > 1 and k > 0:
        negatives[0, 0] = 0  # a zero (placeholder) negative: the clamped-norm path
        anchor[1] = 0  # a zero anchor
    return [anchor, positive, negatives]


def _loss_and_grads(inputs: list[torch.Tensor], kernel: str, wanted=(True, True, True), **options):
    leaves = [x.detach().clone().requires_grad_(want) for x, want in zip(inputs, wanted)]
    loss = tuple_infonce(*leaves, kernel=kernel, **options)
    weights = torch.linspace(0.5, 2.0, len(loss), dtype=loss.dtype)  # a non-uniform upstream gradient
    (loss * weights).sum().backward()
    return [loss.detach()] + [x.grad for x in leaves]


def _assert_close(got: torch.Tensor | None, want: torch.Tensor | None, dtype: torch.dtype) -> None:
    if want is None:
        assert got is None
        return
    scale = want.abs().amax().clamp_min(1.0)  # the zero anchor's gradient is ~1e12: compare relative to the largest
    assert torch.isfinite(got).all() and float((got - want).abs().amax() / scale) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("mask", [None, "rows", "broadcast"])
def test_fused_matches_composed_values_and_gradients(dtype, similarity, mask):
    inputs = _inputs(9, 5, 24, dtype)
    masks = {"rows": torch.rand(9, 5, generator=torch.Generator().manual_seed(1)) > 0.4,
             "broadcast": torch.tensor([True, False, True, True, False])}
    options = {"temperature": 0.3, "similarity": similarity, "negative_mask": masks.get(mask)}
    for got, want in zip(_loss_and_grads(inputs, "fused", **options), _loss_and_grads(inputs, "torch", **options)):
        _assert_close(got, want, dtype)


@pytest.mark.parametrize("wanted", [(False, False, True), (True, False, False), (False, True, False)])
def test_fused_computes_only_the_gradients_asked_for(wanted):
    inputs = _inputs(6, 3, 8, torch.float64)
    fused, composed = _loss_and_grads(inputs, "fused", wanted), _loss_and_grads(inputs, "torch", wanted)
    for got, want in zip(fused, composed):
        _assert_close(got, want, torch.float64)


def test_fused_reads_strided_inputs_and_degenerate_shapes():
    anchor, positive, negatives = _inputs(7, 4, 6, torch.float64)
    strided = [anchor.t().contiguous().t(), positive[:, :], negatives.transpose(0, 1).contiguous().transpose(0, 1)]
    assert not strided[0].is_contiguous() and not strided[2].is_contiguous()
    for got, want in zip(_loss_and_grads(strided, "fused"), _loss_and_grads(strided, "torch")):
        _assert_close(got, want, torch.float64)
    for n, k in ((0, 3), (4, 0)):  # no anchors; no negatives (the loss is 0: the positive is the only candidate)
        got, want = (tuple_infonce(*_inputs(n, k, 5, torch.float64), kernel=kernel) for kernel in ("fused", "torch"))
        assert got.shape == (n,) and torch.allclose(got, want)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_fused_gradients_pass_gradcheck(similarity):
    leaves = [x.requires_grad_(True) for x in _inputs(4, 3, 5, torch.float64, seed=3)[:2]]
    negatives = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True]] * 4)
    assert torch.autograd.gradcheck(
        lambda *x: tuple_infonce(*x, similarity=similarity, negative_mask=mask, kernel="fused"),
        (*[x.detach().normal_().requires_grad_(True) for x in leaves], negatives))


def test_auto_kernel_is_fused_only_where_it_can_run():
    half = [torch.randn(*shape).half() for shape in ((3, 4), (3, 4), (3, 2, 4))]
    assert applies(*_inputs(3, 2, 4, torch.float32)) and not applies(*half)
    assert not applies(half[0].float(), half[1].double(), half[2].float())  # mixed dtypes: torch's own error
    got = tuple_infonce(*[x.float() for x in half], kernel="auto")
    assert torch.allclose(tuple_infonce(*half).float(), got, atol=2e-2)  # float16 takes the composed form
    with pytest.raises(ValueError, match="fused"):
        tuple_infonce(*half, kernel="fused")
    with pytest.raises(ValueError, match="kernel"):
        tuple_infonce(*_inputs(3, 2, 4, torch.float32), kernel="numba")


def test_fused_is_differentiable_once_and_catches_in_place_changes():
    anchor, positive, negatives = (x.requires_grad_(True) for x in _inputs(4, 3, 5, torch.float64))
    loss = tuple_infonce(anchor, positive, negatives, kernel="fused").sum()
    (grad,) = torch.autograd.grad(loss, anchor, retain_graph=True)
    assert grad.grad_fn is None  # no graph of the gradient: a second derivative cannot be silently zero
    with pytest.raises(RuntimeError, match='kernel="torch"'):
        torch.autograd.grad(loss, anchor, create_graph=True)
    twice = torch.autograd.grad(tuple_infonce(anchor, positive, negatives, kernel="torch").sum(), anchor,
                                create_graph=True)[0]
    assert torch.autograd.grad(twice.sum(), positive)[0].abs().sum() > 0  # the composed form has second derivatives
    base = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    negatives = base * 1.0  # a non-leaf, so that it may be changed in place
    loss = tuple_infonce(anchor, positive, negatives, kernel="fused").sum()
    negatives.mul_(2)  # after the forward saved it
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_graph_without_gradients():
    inputs = [x.requires_grad_(True) for x in _inputs(4, 3, 5, torch.float32)]
    with torch.no_grad():
        assert tuple_infonce(*inputs).grad_fn is None
    assert tuple_infonce(*[x.detach() for x in inputs]).grad_fn is None
    assert tuple_infonce(*inputs).grad_fn is not None


@pytest.mark.parametrize("kernel", ["fused", "torch"])
def test_a_mask_of_the_wrong_shape_is_named(kernel):
    inputs = _inputs(4, 3, 5, torch.float32)
    with pytest.raises(ValueError, match=r"negative_mask must broadcast to \[n, k\] = \[4, 3\]; got \[4, 4\]"):
        tuple_infonce(*inputs, negative_mask=torch.ones(4, 4, dtype=torch.bool), kernel=kernel)
