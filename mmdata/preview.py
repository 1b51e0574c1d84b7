"""Contact sheets: a grid of samples (rows) by fields (columns) drawn from a shard split, as a PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend
import numpy as np  # noqa: E402

from mmdata.shards.read import SplitShards, resolve_split_dir  # noqa: E402
from mmdata.shards.members import MemberReader  # noqa: E402
from mmdata.types import Field, field_modality  # noqa: E402


def _draw(ax: Any, name: str, value: Any, spec: Field) -> None:
    """One cell: images and 2-D arrays as pictures, [time, dim] features as heat maps, text wrapped."""
    ax.set_xticks([])
    ax.set_yticks([])
    if spec.dtype == "str":
        ax.text(0.02, 0.5, str(value)[:160], wrap=True, fontsize=6, va="center")
        return
    array = np.asarray(value)
    if array.ndim == 0:
        ax.text(0.5, 0.5, f"{name} = {array.item():.3g}" if array.dtype.kind == "f" else f"{name} = {array}",
                ha="center", va="center", fontsize=9)
        return
    if array.ndim == 3 and array.shape[2] in (3, 4):
        ax.imshow(array)
        return
    picture = array.reshape(array.shape[0], -1)
    # Feature sequences are [time, dim]: show time left to right, like a spectrogram.
    if field_modality(name) == "feat":
        picture = picture.T
    ax.imshow(picture, aspect="auto", cmap="gray" if field_modality(name) in ("image", "depth") else "magma")


def contact_sheet(source: Path, out: Path, *, split: str = "train", count: int = 8) -> Path:
    """Draw the first ``count`` samples of a split, one row per sample and one column per field.

    Args:
        source: a corpus shard directory or a split directory.
        out: the PNG file to write.
        split: which split of a corpus directory.
        count: number of samples (rows).
    """
    shards = SplitShards.open(resolve_split_dir(source, split))
    names = sorted(shards.features)
    reader = MemberReader(shards.directory, shards.stored, shards.index, names, view=shards.view, label=shards.label)
    rows = min(count, len(shards.index["key"]))
    fig, axes = plt.subplots(rows, len(names), figsize=(2.2 * len(names), 1.9 * rows), squeeze=False)
    try:
        for r in range(rows):
            sample = reader.read(r)
            for c, name in enumerate(names):
                _draw(axes[r][c], name, sample[name], shards.features[name])
                if r == 0:
                    axes[r][c].set_title(name, fontsize=8)
            axes[r][0].set_ylabel(sample["__key__"].rsplit("/", 1)[-1], fontsize=7)
    finally:
        reader.close()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
