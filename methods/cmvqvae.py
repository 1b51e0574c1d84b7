"""CM-VQVAE: per-modality VQ-VAEs, a shared learnable channel mask and a task solver on the masked latents
(../shared/methods.md 4.1; seed 003 and CyberAgentAILab/CM-VQVAE ``CREMA-D/model.py``, ``main.py``).

Per field m: phi^m encodes the field to z_e^m [B, h, w, D], :class:`~methods.quantize.VectorQuantizer` gives
z_hat^m, and psi^m reconstructs phi's input from the **unmasked** z_hat^m. The task solver reads the channel
concatenation [z_hat^1; ...; z_hat^M] (M*D channels) times omega = 1[omega~ > t], one value per channel shared
by all samples and positions, binarised with a straight-through gradient. Loss (the code's
``regularization=True``): sum_m MSE(x~^m, x^m) (not divided by the data variance) + task loss + sum_m L_VQ^m +
``mask_penalty`` * sum_d omega~_d (a signed sum of the raw values). compl / contr / zeta:
:mod:`methods.complementarity`. Adapted to our fields, and where it departs from the official code:

- phi/psi per field from its schema (:func:`methods.blocks.encoder_kind`): pictures (images, spectrograms,
  depth/normal maps) and video (the middle real frame of the clip; the code samples a random frame) are
  area-resized to ``image_size`` squared and go through the code's conv VQ-VAE layout (latent grid
  image_size / 4; the code keeps 128 px faces and 256 px spectrograms for a 32 x 32 latent, and gives the
  audio encoder an extra max-pool); vectors, and [T, D] sequences after a masked mean over time, go through an
  MLP to a one-cell [1, 1, D] latent, broadcast over the grid in the solver. Text and points are refused.
  The reconstruction target is phi's input (the resized picture, the pooled vector).
- Solver: :class:`~methods.quantize.LatentClassifier` (GroupNorm for BatchNorm, no residual stack).
- Segmentation (a class-map label, NYUv2): the solver is a VQ-VAE decoder (psi's layout) with one output per
  class, upsampled to the label's size; cross-entropy ignores void (class 0), median-frequency weighted when
  ``balance`` (as :mod:`methods.rgbd_seg`); the paper rescales everything to 256 x 256.
- Optimiser and schedule are the loop's (AdamW with the run's weight decay; the code uses Adam, no decay).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.blocks import encoder_kind, field_input, label_field
from methods.heads import check_label, head_size, target, task_loss, task_of, task_pred, task_scores
from methods.complementarity import complementarity_of, flat, reconstruction_sheet
from methods.losses import median_frequency_weights
from methods.quantize import ConvDecoder, ConvEncoder, LatentClassifier, MLPDecoder, MLPEncoder, VectorQuantizer
from methods.rgbd_seg import planes
from mmdata.types import Features, Field, Tuples

VOID = 0  # the unlabelled class of segmentation maps (never trained, never predicted)


def field_kind(name: str, field: Field) -> str:
    """"picture" (conv VQ-VAE: image-like maps, a video's frame) or "vector" (MLP: vectors, pooled sequences).

    Raises:
        ValueError: naming the field, for text, points and other fields without a quantisable tensor.
    """
    kind = encoder_kind(name, field)  # raises ValueError naming the field for points, labels, metadata
    if kind in ("image", "video"):
        return "picture"
    if kind in ("vector", "sequence"):
        return "vector"
    raise ValueError(f"cmvqvae quantises pictures, video frames, vectors and [T, D] sequences; field {name!r} "
                     f"is {kind}")


def _channels(field: Field) -> int:
    """Colour channels of a picture or video field ([H, W] -> 1, [..., C] -> C)."""
    return 1 if len(field.shape) == 2 else field.shape[-1]


def _frame(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The middle real frame [B, H, W, C] of clips [B, T, H, W, C] (or a filmstrip [B, T * S, S, C])."""
    if x.dim() == 4:  # filmstrip of square frames stacked vertically
        side = x.shape[2]
        x = x.reshape(x.shape[0], -1, side, side, x.shape[3])
        mask = mask[:, ::side] if mask is not None else None
    real = mask.sum(dim=1) if mask is not None else torch.full((x.shape[0],), x.shape[1], device=x.device)
    middle = ((real - 1).clamp_min(0) // 2).long()  # mask is a prefix: real frames come first
    return x[torch.arange(x.shape[0], device=x.device), middle]


def encoder_input(batch: dict[str, Any], name: str, field: Field, size: int, device: torch.device) -> torch.Tensor:
    """What phi reads (and psi reconstructs): a picture [B, C, size, size] or a vector [B, F].

    Pictures are scaled as :func:`methods.rgbd_seg.planes` does (uint8 / 255, depth in metres, normals -1..1)
    and area-resized; a video gives its middle real frame; a sequence its masked mean over time.
    """
    kind = encoder_kind(name, field)
    if kind == "image":
        x = planes(batch, name, field, device)
    elif kind == "video":
        x = _frame(*field_input(batch, name, field, device)).permute(0, 3, 1, 2)
    else:
        x, mask = field_input(batch, name, field, device)
        if x.dim() == 3:  # [B, T, F]: masked mean over the real steps
            m = torch.ones(x.shape[:2], device=x.device) if mask is None else mask.to(x.dtype)
            return (x * m.unsqueeze(-1)).sum(dim=1) / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return x
    return F.adaptive_avg_pool2d(x, (size, size))


def _autoencoder(field: Field, kind: str, d: int, conv: tuple[int, int, int]) -> tuple[nn.Module, nn.Module]:
    """(phi, psi) for one field: the conv pair for pictures, the MLP pair (width ``conv[0]``) for vectors."""
    if kind == "picture":
        return ConvEncoder(_channels(field), d, *conv), ConvDecoder(d, _channels(field), *conv)
    return MLPEncoder(field.shape[-1], d, conv[0]), MLPDecoder(d, field.shape[-1], conv[0])


class CMVQVAE(nn.Module):
    """Per-field VQ-VAEs, the channel mask ``omega`` [M * D] (raw values omega~) and the task solver.

    Attributes:
        fields, kinds: input fields in mask order, and "picture" / "vector" per field.
        label_name, task: the target's batch key; classification | multilabel | regression | segmentation.
        omega: the raw mask omega~ [M * D]; channels m*D .. (m+1)*D - 1 belong to ``fields[m]``.
    """

    def __init__(self, features: Features, fields: list[str], opts: dict[str, Any]) -> None:
        super().__init__()
        self.label_name, label = label_field(features)
        self.fields, self.features = tuple(fields), {n: features[n] for n in fields}
        self.kinds = {n: field_kind(n, f) for n, f in self.features.items()}
        self.task = "segmentation" if label.classes and len(label.shape) == 2 else task_of(label)
        if self.task != "segmentation":
            check_label("cmvqvae", self.label_name, label)
        self.label_shape, self.regression_loss = tuple(label.shape), "l1"
        d, size = opts["code_dim"], opts["image_size"]
        self.code_dim, self.image_size, self.threshold = d, size, opts["threshold"]
        self.mask_penalty, self.balance = opts["mask_penalty"], opts["balance"]
        conv = (opts["hidden"], opts["residual_hidden"], opts["residual_layers"])
        self.encoders, self.decoders, self.quantizers = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for n, f in self.features.items():
            self.encoders[n], self.decoders[n] = _autoencoder(f, self.kinds[n], d, conv)
            self.quantizers[n] = VectorQuantizer(opts["num_codes"], d, commitment=opts["commitment"],
                                                 decay=opts["decay"])
        self.omega = nn.Parameter(torch.full((len(fields) * d,), float(opts["mask_init"])))
        self.grid = size // 4 if "picture" in self.kinds.values() else 1
        if self.task == "segmentation":
            self.solver = ConvDecoder(len(fields) * d, len(label.classes), *conv)
        else:
            self.solver = LatentClassifier(len(fields) * d, self.grid, max(1, d // 2), opts["solver_hidden"],
                                           head_size(label), opts["dropout"])

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs are moved)."""
        return self.omega.device

    def hard_mask(self) -> torch.Tensor:
        """omega = 1[omega~ > t]: bool [M * D] (True = complementary channel)."""
        return self.omega.detach() > self.threshold

    def mask(self) -> torch.Tensor:
        """The binarised mask float [M * D]: value exactly 0/1, gradient the identity in omega~."""
        return self.hard_mask().to(self.omega.dtype) + (self.omega - self.omega.detach())

    def quantize(self, batch: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per field ``(x = phi's input, z_hat [B, h, w, D] float32, L_VQ scalar)``."""
        out = {}
        for n in self.fields:
            x = encoder_input(batch, n, self.features[n], self.image_size, self.device)
            z_hat, vq_loss, _ = self.quantizers[n](self.encoders[n](x))
            out[n] = (x, z_hat, vq_loss)
        return out

    def masked(self, latents: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """[z_hat^1; ...; z_hat^M] * mask as a map [B, M * D, g, g] (one-cell latents broadcast over the grid)."""
        grid = (latents[0].shape[0], self.grid, self.grid, self.code_dim)
        z = torch.cat([q.expand(grid) for q in latents], dim=-1) * mask
        return z.permute(0, 3, 1, 2)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple]]:
        """(task output [B, C] logits / [B] values / [B, K, H, W] class logits, embedding [B, E], the
        per-field ``(x, z_hat, L_VQ)`` of :meth:`quantize`)."""
        parts = self.quantize(batch)
        z = self.masked([parts[n][1] for n in self.fields], self.mask())
        if self.task == "segmentation":
            logits = F.interpolate(self.solver(z.permute(0, 2, 3, 1)).float(), size=self.label_shape,
                                   mode="bilinear", align_corners=False)
            return logits, z.float().mean(dim=(2, 3)), parts
        out, emb = self.solver(z)
        out = out.float()
        return (out.squeeze(-1) if self.task == "regression" else out), emb, parts


def build_model(features: Features, *, fields: list[str], num_codes: int = 512, code_dim: int = 64,
                commitment: float = 0.25, decay: float = 0.99, threshold: float = 5e-3, mask_penalty: float = 1e-4,
                mask_init: float = 0.01, hidden: int = 128, residual_hidden: int = 32, residual_layers: int = 2,
                image_size: int = 32, solver_hidden: int = 256, dropout: float = 0.5,
                balance: bool = True) -> CMVQVAE:
    """A CM-VQVAE over ``fields`` (defaults: the code's CREMA-D settings, except ``image_size``).

    Args:
        features: the corpus schema (one label field: class id, multi-hot, value, or a class map [H, W]).
        fields: input fields (pictures, videos, vectors, [T, D] sequences); their order is the mask's.
        num_codes, code_dim: K codes of size D per field's codebook.
        commitment: beta of the VQ loss; decay: EMA codebook when > 0 (the code: 0.99), else a trained one.
            With N starting at 0, the first EMA step blows up every code used less than ~decay / (1 - decay)
            times in that batch: on small grids and batches (the CREMA-D mini: 2 048 latent vectors a batch)
            only 2-3 codes survive, and training takes off only after ~150 steps.
        threshold: t of the mask omega = 1[omega~ > t]; mask_init: omega~'s initial value (every channel on).
        mask_penalty: weight of the signed sum of omega~ in the loss.
        hidden, residual_hidden, residual_layers: conv channels of phi/psi (the code: 128, 32, 2); hidden is
            also the MLP width of vector fields.
        image_size: pictures and frames are resized to image_size x image_size (a multiple of 4; latent grid
            image_size / 4).
        solver_hidden, dropout: the classifier's FC width and dropout (the code: 256, 0.5).
        balance: median-frequency class weights in the segmentation loss.

    Raises:
        ValueError: unknown or unsupported fields, a label no head serves, or an out-of-range option.
    """
    opts = {k: v for k, v in locals().items() if k not in ("features", "fields")}  # the keyword options
    missing = [n for n in fields if n not in features]
    if not fields or missing:
        raise ValueError(f"fields must name input fields of the corpus; unknown {missing}, known {sorted(features)}")
    if image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a positive multiple of 4 (two stride-2 convs), got {image_size}")
    if threshold >= mask_init:
        warnings.warn(f"cmvqvae: threshold {threshold} >= mask_init {mask_init}: every channel starts masked")
    return CMVQVAE(features, list(fields), opts)


def _losses(model: CMVQVAE, out: torch.Tensor, parts: dict[str, tuple],
            batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The four terms of the loss, each a float32 scalar."""
    if model.task == "segmentation":
        y = batch[model.label_name].to(model.device, non_blocking=True).long()
        weight = median_frequency_weights(y, out.shape[1], VOID) if model.balance else None
        task = F.cross_entropy(out, y, weight=weight, ignore_index=VOID)
    else:
        task = task_loss(model.task, out, target(batch, model.label_name, model.task, model.device),
                         model.regression_loss)
    recon = sum(F.mse_loss(model.decoders[n](z_hat).float(), x) for n, (x, z_hat, _) in parts.items())
    vq = sum(vq_loss for _, _, vq_loss in parts.values())
    return {"task_loss": task, "recon_loss": recon, "vq_loss": vq,
            "mask_penalty": model.mask_penalty * model.omega.float().sum()}


def _classes(logits: torch.Tensor) -> torch.Tensor:
    """Class maps [B, H, W] uint8 from [B, K, H, W] logits, void (class 0) never predicted."""
    return (logits[:, 1:].argmax(dim=1) + 1).to(torch.uint8)


def training_step(model: CMVQVAE, batch: dict[str, Any], tuples: Tuples | None = None) -> dict[str, torch.Tensor]:
    """L = sum_m MSE_m + task loss + sum_m L_VQ^m + mask_penalty * sum(omega~) for one batch (``tuples`` unused).

    Returns:
        ``{"loss", "pred", "task_loss", "recon_loss", "vq_loss", "mask_penalty"}``: the terms (detached, the
        penalty already weighted) beside their sum; ``pred`` as :func:`methods.heads.task_pred` (class ids
        [B], 0/1 [B, C], values [B]) or class maps [B, H, W] for segmentation.
    """
    out, _, parts = model(batch)
    terms = _losses(model, out, parts, batch)
    pred = _classes(out).detach() if model.task == "segmentation" else task_pred(model.task, out)
    return {"loss": sum(terms.values()), "pred": pred, **{k: v.detach() for k, v in terms.items()}}


@torch.no_grad()
def predict(model: CMVQVAE, batch: dict[str, Any]) -> torch.Tensor:
    """Class probabilities [B, C], per-class probabilities [B, C], values [B], or class maps [B, H, W] uint8."""
    out = model(batch)[0]
    return _classes(out) if model.task == "segmentation" else task_scores(model.task, out)


def embed(model: CMVQVAE, batch: dict[str, Any]) -> torch.Tensor:
    """The solver's hidden layer [B, solver_hidden] (segmentation: the masked latents, mean-pooled [B, M * D])."""
    return model(batch)[1]


def complementarity(model: CMVQVAE) -> dict[str, Any]:
    """compl / contr percentages per field (summing to 100) and zeta of the model's current mask
    (:func:`methods.complementarity.complementarity_of`; zeta 0 with a warning when no channel is on)."""
    return complementarity_of(model.hard_mask().cpu(), model.fields)


def describe(model: CMVQVAE) -> dict[str, float]:
    """Run metrics for the evaluate stage: ``zeta``, ``compl_<field>``, ``contr_<field>`` (``zeta_<field>``
    when M > 2)."""
    return flat(complementarity(model))


@torch.no_grad()
def figures(model: CMVQVAE, batch: dict[str, Any], directory: Path, *, samples: int = 4) -> list[Path]:
    """Write ``directory/reconstructions.png``: for the first ``samples`` rows of ``batch`` and each picture
    field, the input, psi(z_hat), psi(z_hat * omega) (complementary) and psi(z_hat * (1 - omega))
    (contradictory). Eval mode; the same model and batch give the same bytes.

    Returns:
        ``[path]``, or ``[]`` when no field is a picture.
    """
    pictures = [n for n in model.fields if model.kinds[n] == "picture"]
    if not pictures:
        return []
    model.eval()
    head = {k: v[:samples] for k, v in batch.items()}  # tensors and lists alike
    parts, mask, d = model.quantize(head), model.hard_mask().float(), model.code_dim
    summary, panels = complementarity(model), {}
    for n in pictures:
        x, z_hat, _ = parts[n]
        keep = mask[model.fields.index(n) * d:(model.fields.index(n) + 1) * d]
        panels[n] = [x.cpu()] + [model.decoders[n](z_hat * w).float().cpu() for w in (1.0, keep, 1.0 - keep)]
    captions = {n: f"compl {summary['compl'][n]:.1f}% contr {summary['contr'][n]:.1f}%" for n in pictures}
    return [reconstruction_sheet(panels, captions, Path(directory) / "reconstructions.png")]
