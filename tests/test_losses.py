"""methods/losses.py: the multi-similarity loss (PML parity, a naive loop, multi-hot semantics, PML's quirk)
and the refiner losses (known values, the contrastive variants)."""
from __future__ import annotations

import math

import pytest
import torch

from methods.losses import REFINER_LOSSES, multi_similarity_loss, refiner_contrastive_loss

# (batch size, number of classes): many classes with small batches leave anchors without positives.
SHAPES = [(2, 1), (3, 2), (8, 3), (16, 4), (32, 10), (64, 5), (50, 50)]


def _lse1(values: list[torch.Tensor]) -> torch.Tensor:
    """log(1 + sum exp(v)) of a Python list, 0 for an empty one."""
    return torch.logsumexp(torch.stack([*values, torch.zeros((), dtype=torch.float64)]), dim=0)


def naive_ms(x, same, epsilon, a_p=2.0, a_n=50.0, lam=0.5):
    """Per-anchor loop of the multi-similarity loss; ``same(i, k)`` says whether k is a positive of i."""
    x = torch.nn.functional.normalize(x, dim=1)
    n, total = len(x), torch.zeros((), dtype=torch.float64)
    for i in range(n):
        s = [x[i] @ x[k] for k in range(n)]
        pos = [k for k in range(n) if k != i and same(i, k)]
        neg = [k for k in range(n) if k != i and not same(i, k)]
        if epsilon is not None:
            if not pos or not neg:
                pos, neg = [], []
            else:
                hard_neg, hard_pos = max(float(s[k]) for k in neg), min(float(s[k]) for k in pos)
                pos, neg = ([k for k in pos if float(s[k]) - epsilon < hard_neg],
                            [k for k in neg if float(s[k]) + epsilon > hard_pos])
        total = total + _lse1([-a_p * (s[k] - lam) for k in pos]) / a_p + _lse1([a_n * (s[k] - lam) for k in neg]) / a_n
    return total / n


def _batch(n, c, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g, dtype=dtype), torch.randint(c, (n,), generator=g)


def _value_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True) if loss.requires_grad else (None,)
    return loss.detach(), torch.zeros_like(x) if grad is None else grad


@pytest.mark.parametrize("n,c", SHAPES)
@pytest.mark.parametrize("epsilon", [0.1, None])
def test_ms_loss_matches_pytorch_metric_learning(n, c, epsilon):
    pml = pytest.importorskip("pytorch_metric_learning", reason="the dev extra (pytorch-metric-learning) is "
                              "the reference of this parity test")
    from pytorch_metric_learning import losses, miners

    reference = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    miner = miners.MultiSimilarityMiner(epsilon=epsilon) if epsilon is not None else None
    assert pml.__version__
    compared = 0
    for seed in range(5):
        x, y = _batch(n, c, seed)
        ours, g_ours = _value_and_grad(lambda e: multi_similarity_loss(e, y, epsilon=epsilon), x)
        theirs, g_theirs = _value_and_grad(lambda e: reference(e, y, miner(e, y) if miner else None), x)
        if miner and all(len(t) <= 1 for t in miner(x, y)) and any(len(t) for t in miner(x, y)):
            # PML's quirk (see the next test): it returns 0; we keep the formula's value
            assert float(theirs) == 0.0 and float(ours) > 0.0
            continue
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (seed, float(ours), float(theirs))
        assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=1e-4), seed
        compared += 1
    assert compared >= 3


def test_ms_loss_differs_from_pml_only_by_its_single_pair_quirk():
    """One anchor mines one positive and one negative: PML returns 0 (every index tensor has one entry), we
    return that anchor's loss / N, as the formula says."""
    pytest.importorskip("pytorch_metric_learning", reason="compares with pytorch-metric-learning")
    from pytorch_metric_learning import losses, miners

    angle = torch.tensor([0.0, math.pi / 3, -math.pi / 6], dtype=torch.float64)  # S01 = .5, S02 = .866, S12 = 0
    x, y = torch.stack([angle.cos(), angle.sin()], dim=1), torch.tensor([0, 0, 1])
    mined = miners.MultiSimilarityMiner(epsilon=0.1)(x, y)
    assert [t.tolist() for t in mined] == [[0], [1], [0], [2]]  # only anchor 0: S02 + .1 > S01, S12 + .1 < S01
    assert float(losses.MultiSimilarityLoss()(x, y, mined)) == 0.0
    expected = (0.5 * math.log(2.0) + math.log1p(math.exp(50 * (math.cos(math.pi / 6) - 0.5))) / 50) / 3
    assert float(multi_similarity_loss(x, y)) == pytest.approx(expected, rel=1e-12)
    assert float(naive_ms(x, lambda i, k: y[i] == y[k], 0.1)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n,c", SHAPES)
@pytest.mark.parametrize("epsilon", [0.1, 0.5, None])
def test_ms_loss_equals_a_naive_loop(n, c, epsilon):
    x, y = _batch(n, c, n + c, torch.float64)
    ours, g_ours = _value_and_grad(lambda e: multi_similarity_loss(e, y, epsilon=epsilon), x)
    loop, g_loop = _value_and_grad(lambda e: naive_ms(e, lambda i, k: bool(y[i] == y[k]), epsilon), x)
    assert torch.allclose(ours, loop, atol=1e-12) and torch.allclose(g_ours, g_loop, atol=1e-10)


def test_ms_loss_scales_and_base_are_used():
    x, y = _batch(16, 3, 1, torch.float64)
    for options in ({"pos_scale": 3.0}, {"neg_scale": 20.0}, {"base": 0.2}):
        settings = {"pos_scale": 2.0, "neg_scale": 50.0, "base": 0.5, **options}
        loop = naive_ms(x, lambda i, k: bool(y[i] == y[k]), 0.1, settings["pos_scale"], settings["neg_scale"],
                        settings["base"])
        assert float(multi_similarity_loss(x, y, **options)) == pytest.approx(float(loop), rel=1e-12)
        assert float(multi_similarity_loss(x, y, **options)) != pytest.approx(float(multi_similarity_loss(x, y)))


def test_ms_loss_multi_hot_positives_share_a_label():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y = (torch.rand(12, 5, generator=g) < 0.3).long()
    y[0] = 0  # a sample with no label is a negative of every other one
    shares = lambda i, k: bool((y[i] * y[k]).sum() > 0)  # noqa: E731
    for epsilon in (0.1, None):
        assert float(multi_similarity_loss(x, y, epsilon=epsilon)) == pytest.approx(
            float(naive_ms(x, shares, epsilon)), rel=1e-12)
        # float multi-hot (what heads.target gives a multilabel task) is read the same way
        assert float(multi_similarity_loss(x, y.float(), epsilon=epsilon)) == pytest.approx(
            float(multi_similarity_loss(x, y, epsilon=epsilon)), rel=1e-12)
    # MMF's bug (every anchor compared with row 0's labels) would give another value
    mmf_bug = naive_ms(x, lambda i, k: bool((y[0] * y[k]).sum() > 0), None)
    assert float(multi_similarity_loss(x, y, epsilon=None)) != pytest.approx(float(mmf_bug))


def test_ms_loss_one_hot_rows_equal_class_ids():
    x, y = _batch(20, 4, 7, torch.float64)
    one_hot = torch.nn.functional.one_hot(y, 4)
    assert float(multi_similarity_loss(x, one_hot)) == pytest.approx(float(multi_similarity_loss(x, y)), rel=1e-12)


def test_ms_loss_edge_cases_and_errors():
    x = torch.randn(4, 3)
    assert float(multi_similarity_loss(x, torch.zeros(4, dtype=torch.long))) == 0.0  # no negatives: nothing mined
    assert float(multi_similarity_loss(x, torch.arange(4))) == 0.0  # no positives
    assert float(multi_similarity_loss(x[:1], torch.zeros(1, dtype=torch.long))) == 0.0
    assert float(multi_similarity_loss(x, torch.arange(4), epsilon=None)) > 0  # all-negative term without mining
    with pytest.raises(ValueError, match="regression"):
        multi_similarity_loss(x, torch.rand(4))
    with pytest.raises(ValueError, match="N labels"):
        multi_similarity_loss(x, torch.arange(3))
    with pytest.raises(ValueError, match="shape"):
        multi_similarity_loss(x, torch.zeros(4, 2, 2))


def test_ms_loss_is_float32_under_bf16_autocast():
    x, y = _batch(16, 3, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = multi_similarity_loss(x, y)
    assert value.dtype == torch.float32 and float(value) == pytest.approx(float(multi_similarity_loss(x, y)))


def test_refiner_cosine_and_mse_known_values():
    decoded = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # cos = 1 and 0
    assert float(REFINER_LOSSES["cosine"](decoded, target)) == pytest.approx(0.5)
    assert float(REFINER_LOSSES["mse"](decoded, target)) == pytest.approx((0 + 0 + 1 + 4) / 4)
    assert float(REFINER_LOSSES["cosine"](target, target)) == pytest.approx(0.0, abs=1e-7)
    assert set(REFINER_LOSSES) == {"cosine", "mse", "contrastive"}


def _rows(*angles):
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([a.cos(), a.sin()], dim=1)


def test_refiner_contrastive_mmf_and_paper_eq4_known_values():
    target = _rows(0.0, math.pi / 2, math.pi)
    # decoded on their targets (and the others at cos <= 0): no violator in either variant
    assert float(refiner_contrastive_loss(target, target)) == 0.0
    assert float(refiner_contrastive_loss(target, target, variant="paper_eq4")) == 0.0
    decoded = _rows(1.2, 1.0, math.pi)
    r = lambda k, t: math.cos([1.2, 1.0, math.pi][k] - [0.0, math.pi / 2, math.pi][t])  # noqa: E731
    # mmf rows: row 0 (r00 = .362) has one violator, r01 = .932 > r00 - .1; row 1 (r11 = .841): r10 = .540 is
    # below r11 - .1; row 2 is on its target
    assert float(refiner_contrastive_loss(decoded, target)) == pytest.approx((0.1 + r(0, 1) - r(0, 0)) / 3)
    assert float(refiner_contrastive_loss(decoded, target, margin=0.0)) == pytest.approx((r(0, 1) - r(0, 0)) / 3)
    # paper Eq. 4 columns: column 0 counts r10 - r00 = .178 > 0, column 1 counts r01 - r11 = .091 > 0; no margin
    eq4 = (r(1, 0) - r(0, 0) + r(0, 1) - r(1, 1)) / 3
    assert float(refiner_contrastive_loss(decoded, target, variant="paper_eq4")) == pytest.approx(eq4)
    assert float(refiner_contrastive_loss(decoded, target, variant="paper_eq4", margin=0.5)) == pytest.approx(eq4)


def test_refiner_contrastive_mean_over_violators_and_errors():
    target = _rows(0.0, 0.1, 0.2)
    decoded = target.clone()  # every row has two violators within the margin
    r = lambda i, j: math.cos(0.1 * (i - j))  # noqa: E731
    row = lambda i: sum(0.1 + r(i, j) - 1 for j in range(3) if j != i) / 2  # noqa: E731
    assert float(refiner_contrastive_loss(decoded, target)) == pytest.approx(sum(row(i) for i in range(3)) / 3)
    assert float(refiner_contrastive_loss(decoded[:1], target[:1])) == 0.0
    with pytest.raises(ValueError, match="paper_eq4"):
        refiner_contrastive_loss(decoded, target, variant="eq4")


def test_refiner_losses_have_gradients_to_both_sides():
    g = torch.Generator().manual_seed(0)
    for name, loss in REFINER_LOSSES.items():
        decoded, target = torch.randn(6, 4, generator=g, requires_grad=True), torch.randn(6, 4, generator=g)
        value = loss(decoded, target)
        value.backward()
        assert value.dim() == 0 and decoded.grad.abs().sum() > 0, name
