"""Vector quantisation (the VQ-VAE bottleneck) and the small VQ-VAE encoder/decoder pairs built around it.

:class:`VectorQuantizer` follows zalando's pytorch-vq-vae (``b98fde9``; CM-VQVAE's copy is identical), whose
formulas ../shared/methods.md 7.3 states: nearest code by squared distance (first index on ties), the
codebook/commitment loss, straight-through gradients, optional EMA codebook updates, perplexity. The two
encoder/decoder pairs are what :mod:`methods.cmvqvae` builds per modality: a conv pair for pictures
(spectrograms, video frames) in the layout of CM-VQVAE's CREMA-D code, and an MLP pair for vectors; and
its task solver on the masked latents, :class:`LatentClassifier`. Only torch is imported here, so
:mod:`methods.blocks` can re-export :class:`VectorQuantizer`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code of each row: argmin_k ||x||^2 + ||e_k||^2 - 2 x.e_k (zalando's expansion).

    Args:
        flat: vectors [N, D]; codebook: codes [K, D].

    Returns:
        int64 [N]; ties go to the first index (``torch.argmin``'s documented rule).
    """
    distances = (flat ** 2).sum(dim=1, keepdim=True) + (codebook ** 2).sum(dim=1) - 2.0 * flat @ codebook.T
    return distances.argmin(dim=1)


def perplexity(onehot: torch.Tensor) -> torch.Tensor:
    """exp(-sum p log(p + 1e-10)) of the mean one-hot p [K] over the N rows of ``onehot`` [N, K]."""
    mean = onehot.mean(dim=0)
    return torch.exp(-(mean * torch.log(mean + 1e-10)).sum())


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of channels-last vectors, with straight-through gradients.

    ``decay == 0``: the codebook is a parameter drawn U(-1/K, 1/K), trained by the loss
    ``mean((q - sg x)^2) + commitment * mean((sg q - x)^2)``. ``decay > 0``: the codebook is a buffer drawn
    N(0, 1), moved by exponential moving averages (cluster sizes N, code sums m, Laplace smoothing with
    ``epsilon``) in training mode only, *after* the batch was quantised with the old codebook; the loss is
    ``commitment * mean((sg q - x)^2)``.

    Attributes:
        codebook: [K, D] codes (a parameter without EMA, a buffer with it).
        cluster_size, code_sum: the EMA state N [K] (starts at 0) and m [K, D] (starts N(0, 1)); EMA only.
        perplexity: of the codes chosen by the last forward (a detached scalar; None before the first).
    """

    def __init__(self, num_codes: int, dim: int, *, commitment: float = 0.25, decay: float = 0.0,
                 epsilon: float = 1e-5) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes and dim must be positive, got {num_codes} and {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1) (0 = no EMA), got {decay}")
        self.num_codes, self.dim, self.commitment, self.decay, self.epsilon = num_codes, dim, commitment, decay, epsilon
        self.perplexity: torch.Tensor | None = None
        if decay > 0.0:  # drawn in zalando's order: the codes, then the EMA sums
            self.register_buffer("codebook", torch.randn(num_codes, dim))
            self.register_buffer("cluster_size", torch.zeros(num_codes))
            self.register_buffer("code_sum", torch.randn(num_codes, dim))
        else:
            self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``x`` [..., D].

        Returns:
            ``(quantized [..., D] float32, loss scalar, codes [...] int64)``; ``quantized`` has exactly the
            codes' values in the forward pass and the identity gradient in ``x``.
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer expects channels-last inputs [..., {self.dim}], got {list(x.shape)}")
        # Distances, counts and EMA sums in float32 whatever the autocast: a bf16 argmin picks other codes.
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(-1, self.dim).float()
            codes = nearest_codes(flat.detach(), self.codebook.detach())
            q = self.codebook[codes]  # before any EMA update: the batch is quantised with the old codebook
            onehot = F.one_hot(codes, self.num_codes).to(flat.dtype)
            if self.decay > 0.0:
                if self.training:
                    self._ema_update(flat.detach(), onehot)
                loss = self.commitment * F.mse_loss(q.detach(), flat)
            else:
                loss = F.mse_loss(q, flat.detach()) + self.commitment * F.mse_loss(q.detach(), flat)
            self.perplexity = perplexity(onehot).detach()
            # q + (x - sg x): the value is exactly q (x - x == 0), the gradient the identity in x.
            out = q.detach() + (flat - flat.detach())
        return out.reshape(x.shape), loss, codes.reshape(x.shape[:-1])

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        """methods.md 7.3 steps 1-4 on one batch: flat [N, D], onehot [N, K]."""
        decay, eps, k = self.decay, self.epsilon, self.num_codes
        self.cluster_size.copy_(self.cluster_size * decay + (1 - decay) * onehot.sum(dim=0))
        n = self.cluster_size.sum()
        self.cluster_size.copy_((self.cluster_size + eps) / (n + k * eps) * n)
        self.code_sum.copy_(self.code_sum * decay + (1 - decay) * (onehot.T @ flat))
        self.codebook.copy_(self.code_sum / self.cluster_size.unsqueeze(1))


class _Residual(nn.Module):
    """x + conv1x1(relu(bn(conv3x3(relu(bn(x)))))) (CM-VQVAE's residual layer, pre-activation)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_stack(channels: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` residual layers, then BN-ReLU: [B, channels, h, w] -> same shape."""
    return nn.Sequential(*[_Residual(channels, hidden) for _ in range(layers)], nn.BatchNorm2d(channels), nn.ReLU())


class ConvEncoder(nn.Module):
    """phi: [B, C, S, S] -> z_e [B, S/4, S/4, D] (channels last, ready for :class:`VectorQuantizer`).

    Two stride-2 4x4 convs (BN-ReLU), a 3x3 conv, a residual stack and the 1x1 pre-quantisation conv, as in
    CM-VQVAE's image encoder. S must be a multiple of 4.
    """

    def __init__(self, channels: int, dim: int, hidden: int, residual_hidden: int, residual_layers: int) -> None:
        super().__init__()
        half = max(1, hidden // 2)
        self.net = nn.Sequential(
            nn.Conv2d(channels, half, 4, stride=2, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, hidden, 4, stride=2, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), residual_stack(hidden, residual_hidden, residual_layers),
            nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] -> [B, S/4, S/4, D]."""
        return self.net(x).permute(0, 2, 3, 1)


class ConvDecoder(nn.Module):
    """psi: [B, h, w, D] (channels last) -> [B, out, 4h, 4w]; 3x3 conv, residual stack, two stride-2
    transposed convs (CM-VQVAE's image decoder; also the segmentation head with ``out`` = classes)."""

    def __init__(self, dim: int, out: int, hidden: int, residual_hidden: int, residual_layers: int) -> None:
        super().__init__()
        half = max(1, hidden // 2)
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), residual_stack(hidden, residual_hidden, residual_layers),
            nn.ConvTranspose2d(hidden, half, 4, stride=2, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.ConvTranspose2d(half, out, 4, stride=2, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, h, w, D] -> [B, out, 4h, 4w]."""
        return self.net(z.permute(0, 3, 1, 2))


class MLPEncoder(nn.Module):
    """phi for vectors: [B, F] -> z_e [B, 1, 1, D] (a one-cell latent map, so vector and picture fields share
    the mask and the solver)."""

    def __init__(self, in_dim: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] -> [B, 1, 1, D]."""
        return self.net(x)[:, None, None, :]


class MLPDecoder(nn.Module):
    """psi for vectors: [B, 1, 1, D] -> [B, F]."""

    def __init__(self, dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, 1, 1, D] -> [B, F]."""
        return self.net(z[:, 0, 0, :])


class LatentClassifier(nn.Module):
    """CM-VQVAE's task solver gamma for per-sample labels: a (masked) latent map [B, C, g, g] -> [B, outputs].

    conv(C -> mid, stride 2) - GroupNorm - ReLU - conv(stride 2) - ReLU - Dropout - flatten - FC ``hidden`` -
    ReLU - Dropout - FC. The code has BatchNorm, a residual stack after the second conv and BatchNorm1d after
    the FC; GroupNorm keeps one-sample batches on a one-cell grid working.
    """

    def __init__(self, channels: int, grid: int, mid: int, hidden: int, outputs: int, dropout: float) -> None:
        super().__init__()
        cells = math.ceil(math.ceil(grid / 2) / 2) ** 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 3, stride=2, padding=1), nn.GroupNorm(1, mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride=2, padding=1), nn.ReLU(), nn.Dropout(dropout), nn.Flatten(),
            nn.Linear(mid * cells, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, g, g] -> (logits [B, outputs], embedding [B, hidden])."""
        h = self.body(x)
        return self.head(h), h
