"""Fusion modules: ``{field: [B, ..., d_field]} -> [B, ..., hidden]``, shared by every method.

Each entry of :data:`FUSIONS` is built as ``cls(dims, hidden, dropout, **options)``, where ``dims`` maps the input
field names to their embedding sizes in fusion order, so a method that fuses picks any of them by name (the
``fusion`` option) and ReFNet- or Progressive-Fusion-style wrappers can wrap any of them. The fused output is
taken after the fusion's activation where the original has one (ReFNet decodes "the activation layer
post-gating"), then dropout. Every weight is a registered parameter (``nn.Linear``, ``nn.ParameterList``):
MultiBench keeps LMF's factors in a plain list, which ``.to()``, optimisers and checkpoints never see.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

GATE_INPUTS = ("projected", "raw")


class ConcatFusion(nn.Module):
    """Concatenate the per-field embeddings in a fixed order, then a one-hidden-layer MLP.

    Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden]. The order is the ``dims`` order given at
    build time, so it never depends on dict insertion order at call time.
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(dims)
        self.net = nn.Sequential(nn.Linear(sum(dims.values()), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        return self.net(torch.cat([parts[n] for n in self.names], dim=-1))


class SumFusion(nn.Module):
    """Linear Sum (Arevalo et al. 2017's baseline): ``relu(sum_m W_m z_m + b)``, then dropout.

    One bias-free linear map per field and one shared bias (a bias per field would be redundant). Arevalo's
    code puts BN and maxout before the sum; here the sum is linear, as its name says, and the activation
    follows it, as in :class:`ConcatFusion`, so the two differ only in how the fields meet.
    Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden].
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(dims)
        self.proj = nn.ModuleDict({n: nn.Linear(d, hidden, bias=False) for n, d in dims.items()})
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        total = sum(self.proj[n](parts[n]) for n in self.names)
        return self.drop(F.relu(total + self.bias))


def _batch_norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over every row of ``x`` [..., d]; a single training row (the last partial batch of an epoch
    can hold one sample) has no batch variance, so it is normalised with the running statistics instead."""
    flat = x.reshape(-1, x.shape[-1])
    if norm.training and flat.shape[0] == 1:
        flat = F.batch_norm(flat, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
    else:
        flat = norm(flat)
    return flat.reshape(x.shape)


class GatedFusion(nn.Module):
    """Gated Multimodal Unit (Arevalo et al. 2017), in the form of its code (johnarevalo/gmu-mmimdb).

    Each field is batch-normalised and projected without bias to ``hidden``: ``p_m = W_m BN(z_m)``; its
    candidate is ``h_m = tanh(p_m)``. The gate reads ``[p_1; ...; p_M]`` (``gate_input="projected"``, the
    code) or the raw ``[z_1; ...; z_M]`` (``"raw"``, the paper's ``z = sigma(W_z [x_v; x_t])``), bias-free.

    For M = 2 the output is ``g * h_1 + (1 - g) * h_2`` with ``g = sigmoid(W_g [..])``, exactly the bimodal
    GMU. For M > 2 the gate is a softmax over the modalities of M logit maps, the last fixed at 0 (so M = 2
    is the case above: softmax([a, 0]) = [sigmoid(a), 1 - sigmoid(a)]); the output stays a convex mix of
    the candidates per unit. The paper's multimodal figure uses M independent sigmoids instead, which for
    M = 2 is not the bimodal GMU. For M = 1 there is nothing to gate: ``h = tanh(p_1)`` (unimodal runs).
    The output is post-gating (ReFNet decodes from it), then dropout.
    Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden].
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0, *,
                 gate_input: str = "projected") -> None:
        super().__init__()
        if gate_input not in GATE_INPUTS:
            raise ValueError(f"unknown gate_input {gate_input!r} for fusion 'gmu'; known: {', '.join(GATE_INPUTS)}")
        self.names, self.hidden, self.gate_input = tuple(dims), hidden, gate_input
        self.norms = nn.ModuleDict({n: nn.BatchNorm1d(d) for n, d in dims.items()})
        self.proj = nn.ModuleDict({n: nn.Linear(d, hidden, bias=False) for n, d in dims.items()})
        gate_in = hidden * len(dims) if gate_input == "projected" else sum(dims.values())
        self.gate = nn.Linear(gate_in, hidden * (len(dims) - 1), bias=False) if len(dims) > 1 else None
        self.drop = nn.Dropout(dropout)

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        projected = [self.proj[n](_batch_norm(self.norms[n], parts[n])) for n in self.names]
        candidates = torch.stack([torch.tanh(p) for p in projected], dim=-2)  # [B, ..., M, hidden]
        if self.gate is None:
            return self.drop(candidates[..., 0, :])
        source = projected if self.gate_input == "projected" else [parts[n] for n in self.names]
        logits = self.gate(torch.cat(source, dim=-1)).unflatten(-1, (len(self.names) - 1, self.hidden))
        logits = torch.cat([logits, torch.zeros_like(logits[..., :1, :])], dim=-2)  # last modality: logit 0
        return self.drop((logits.softmax(dim=-2) * candidates).sum(dim=-2))


def _with_one(z: torch.Tensor) -> torch.Tensor:
    """``[1; z]``: [..., d] -> [..., d + 1], the 1 first (TFN and LMF keep the unimodal and bias terms)."""
    return torch.cat([z.new_ones(*z.shape[:-1], 1), z], dim=-1)


class TensorFusion(nn.Module):
    """Tensor Fusion Network (Zadeh et al. 2017): ``t = vec([1; z_1] ⊗ [1; z_2] ⊗ ...)``, then
    ``relu(W t + b)`` and dropout.

    ``t`` has size ``prod_m (d_m + 1)``; the 1 comes first and field 1 is the outermost axis (row-major, as
    MultiBench's ``TensorFusion`` lays it out), so ``t[i_1 * prod_{m>1}(d_m + 1) + ...] = prod_m [1; z_m][i_m]``.
    The ReLU is TFN's post-fusion activation (MultiBench's head MLP after the tensor). Mind the size: three
    fields of 64 give 65**3 inputs to the linear map.
    Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden].
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(dims)
        size = 1
        for d in dims.values():
            size *= d + 1
        self.linear = nn.Linear(size, hidden)
        self.drop = nn.Dropout(dropout)

    def tensor(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flattened outer product ``{field: [B, ..., d_field]}`` -> [B, ..., prod(d_field + 1)]."""
        out = None
        for n in self.names:
            z = _with_one(parts[n])
            out = z if out is None else (out.unsqueeze(-1) * z.unsqueeze(-2)).flatten(-2)
        return out

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        return self.drop(F.relu(self.linear(self.tensor(parts))))


class LowRankFusion(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al. 2018, Justin1904/Low-rank-Multimodal-Fusion; MultiBench's
    ``LowRankTensorFusion``): ``h = sum_r w_r * prod_m ([1; z_m]^T W_m^(r)) + b``, then ``relu`` and dropout.

    Factors ``W_m`` [rank, d_m + 1, hidden] and weights ``w`` [1, rank] start xavier-normal, ``b`` [1, hidden]
    at 0, as in the LMF code. ``h`` equals :class:`TensorFusion`'s linear map with weight
    ``sum_r w_r ⊗_m W_m^(r)`` (:meth:`full_weight`) and bias ``b``; the ReLU is shared with TFN so that the
    identity holds on the outputs. The factors are an ``nn.ParameterList`` (registered).
    Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden].
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0, *, rank: int = 4) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank of fusion 'lmf' must be a positive integer, got {rank!r}")
        self.names = tuple(dims)
        self.factors = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, d + 1, hidden))) for d in dims.values())
        self.weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))
        self.bias = nn.Parameter(torch.zeros(1, hidden))
        self.drop = nn.Dropout(dropout)

    def linear(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The low-rank map before the activation: ``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        product = None
        for n, factor in zip(self.names, self.factors):
            term = torch.einsum("...i,rih->...rh", _with_one(parts[n]), factor)  # [B, ..., rank, hidden]
            product = term if product is None else product * term
        return torch.einsum("...rh,r->...h", product, self.weights[0]) + self.bias[0]

    def full_weight(self) -> torch.Tensor:
        """``sum_r w_r ⊗_m W_m^(r)`` as a linear weight [hidden, prod(d_m + 1)], in TFN's layout."""
        full = None
        for factor in self.factors:  # [rank, d + 1, hidden]; field 1 ends up the outermost axis
            full = factor if full is None else (full.unsqueeze(2) * factor.unsqueeze(1)).flatten(1, 2)
        return torch.einsum("rkh,r->hk", full, self.weights[0])

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        return self.drop(F.relu(self.linear(parts)))


class DecisionFusion(nn.Module):
    """Decision-level fusion (late fusion as ReFNet's introduction uses the term): the mean of the fields'
    logits, made exact under a method's linear head.

    Each field gets its own affine map ``L_m`` to ``hidden`` and the output is ``mean_m L_m z_m``, with no
    activation after the maps. A linear head ``head(x) = A x + c`` then gives ``head(mean_m L_m z_m) =
    mean_m head(L_m z_m)``: the logits are the average of M unimodal decisions ``head(L_m z_m)`` made on the
    fields' own features (the encoders before it are nonlinear already). An activation here would break the
    identity, and averaging probabilities instead of logits would not be linear. Dropout (a mask, linear
    per sample) keeps it. Input ``{field: [B, ..., d_field]}``; output [B, ..., hidden].
    """

    def __init__(self, dims: dict[str, int], hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(dims)
        self.maps = nn.ModuleDict({n: nn.Linear(d, hidden) for n, d in dims.items()})
        self.drop = nn.Dropout(dropout)

    def per_field(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each field's decision input ``L_m z_m``: ``{field: [B, ..., hidden]}``."""
        return {n: self.maps[n](parts[n]) for n in self.names}

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{field: [B, ..., d_field]}`` -> [B, ..., hidden]."""
        return self.drop(torch.stack(list(self.per_field(parts).values())).mean(dim=0))


#: Fusion modules by name; each is built as ``cls(dims: dict[str, int], hidden, dropout, **options)`` and maps
#: ``dict[str, Tensor [B, ..., d]] -> Tensor [B, ..., hidden]``.
FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion, "sum": SumFusion, "gmu": GatedFusion, "tfn": TensorFusion, "lmf": LowRankFusion,
    "late_decision": DecisionFusion,
}


def build_fusion(name: str, dims: dict[str, int], hidden: int, dropout: float = 0.0, **options) -> nn.Module:
    """``FUSIONS[name](dims, hidden, dropout, **options)`` with the name and options checked.

    Args:
        name: a key of :data:`FUSIONS`.
        dims: input field -> embedding size, in fusion order.
        hidden: the fused embedding size.
        dropout: dropout on the fused embedding.
        options: the fusion's keyword-only options (e.g. ``rank`` of ``lmf``); the ``fusion_options`` of a
            method's params block.

    Raises:
        ValueError: an unknown fusion or option (the message lists the known ones).
    """
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSIONS))}")
    known = {p.name for p in inspect.signature(FUSIONS[name]).parameters.values() if p.kind == p.KEYWORD_ONLY}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for fusion {name!r}; known: {sorted(known) or 'none'}")
    return FUSIONS[name](dims, hidden, dropout, **options)
