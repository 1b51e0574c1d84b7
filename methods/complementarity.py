"""CM-VQVAE's reading of its channel mask (../shared/methods.md 4.1): the complementary / contradictory
percentages per modality, the complementarity zeta, and a picture of what each part reconstructs.

"Codes" here are latent channels, not codebook entries: with M modalities of D channels each,
compl^m = 100 * #{channels of m with omega = 1} / (M * D) and contr^m = 100 * #{omega = 0} / (M * D), so the
2M percentages sum to 100. zeta = min(compl) / max(compl) (the paper's two-modality measure); for M > 2 the
appendix's zeta^m = compl^m / sum_{n != m} compl^n is given per modality as well.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _ratio(num: int, den: int, what: str) -> float:
    """num / den, or 0.0 with a warning when den == 0 (every channel of the modalities concerned is masked)."""
    if den == 0:
        warnings.warn(f"complementarity: {what} has no complementary channel; zeta set to 0")
        return 0.0
    return num / den


def complementarity_of(mask: torch.Tensor, fields: Sequence[str]) -> dict[str, Any]:
    """The four (2M) percentages and zeta of a binarised mask.

    Args:
        mask: bool or 0/1 [M * D]; channels m * D .. (m + 1) * D - 1 belong to ``fields[m]``.
        fields: the M modality names, in mask order.

    Returns:
        ``{"compl": {field: %}, "contr": {field: %}, "zeta": float}``, plus ``"zeta_per_field"``
        {field: zeta^m} when M > 2. zeta is 0 (with a warning) when no modality keeps a channel.
    """
    m = len(fields)
    if m == 0 or mask.numel() % m:
        raise ValueError(f"a mask of {mask.numel()} channels cannot be split over {m} fields")
    on = [int(v) for v in mask.reshape(m, -1).bool().sum(dim=1).tolist()]
    dim, total = mask.numel() // m, mask.numel()
    out: dict[str, Any] = {"compl": {f: 100.0 * k / total for f, k in zip(fields, on)},
                           "contr": {f: 100.0 * (dim - k) / total for f, k in zip(fields, on)},
                           "zeta": _ratio(min(on), max(on), "the mask")}
    if m > 2:
        out["zeta_per_field"] = {f: _ratio(k, sum(on) - k, f"every field but {f!r}") for f, k in zip(fields, on)}
    return out


def flat(summary: dict[str, Any]) -> dict[str, float]:
    """:func:`complementarity_of`'s result as flat metric keys: ``zeta``, ``compl_<field>``, ``contr_<field>``
    (and ``zeta_<field>`` when M > 2)."""
    out = {"zeta": float(summary["zeta"])}
    for key in ("compl", "contr"):
        out.update({f"{key}_{f}": float(v) for f, v in summary[key].items()})
    out.update({f"zeta_{f}": float(v) for f, v in summary.get("zeta_per_field", {}).items()})
    return out


def _picture(x: torch.Tensor, low: float, high: float) -> np.ndarray:
    """[C, H, W] -> an [H, W] or [H, W, 3] array in 0..1, scaled by the input's (low, high) range."""
    x = ((x.float() - low) / max(high - low, 1e-12)).clamp(0.0, 1.0)
    return x[0].numpy() if x.shape[0] != 3 else x.permute(1, 2, 0).numpy()


def reconstruction_sheet(panels: dict[str, list[torch.Tensor]], captions: dict[str, str], path: Path) -> Path:
    """Write a PNG: per field and sample one row of input | all | complementary | contradictory.

    Args:
        panels: field -> four [n, C, S, S] tensors (input, psi(z_hat), psi(z_hat * omega),
            psi(z_hat * (1 - omega))); each row is scaled to its input's value range so the four compare.
        captions: field -> a row label (e.g. its compl / contr percentages).
        path: the PNG file; written without a timestamp or version, so the same inputs give the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f, i) for f, p in panels.items() for i in range(p[0].shape[0])]
    fig, axes = plt.subplots(len(rows), 4, figsize=(6.4, 1.6 * len(rows)), squeeze=False)
    for r, (field, i) in enumerate(rows):
        source = panels[field][0][i]
        low, high = float(source.min()), float(source.max())
        for c, (title, x) in enumerate(zip(("input", "all", "complementary", "contradictory"), panels[field])):
            ax = axes[r][c]
            ax.imshow(_picture(x[i], low, high), cmap="magma" if x.shape[1] == 1 else None, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].set_ylabel(f"{field} {i}\n{captions.get(field, '')}", fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path
