"""Small corpus-shaped schemas and random batch dicts for checks that must hold on any input layout."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmdata.rng import make_rng
from mmdata.types import Features, Field

_DIGITS = tuple(str(i) for i in range(10))

#: Schemas shaped like the corpora's (after their views), small enough for a CPU check: vectors (the B.1
#: synthetic), pictures (AV-MNIST: a [28, 28] image and a uint8 spectrogram), variable-length sequences plus a
#: string (MOSI), and an RGB picture beside multi-hot genres (MM-IMDB-like).
SCHEMAS: dict[str, Features] = {
    "vectors": {"feat_a": Field("float32", (8,), "npy"), "feat_b": Field("float32", (8,), "npy"),
                "label": Field("float32", (), "npy")},
    "pictures": {"image": Field("float32", (28, 28), "npy"), "audio_spec": Field("uint8", (32, 32), "png"),
                 "label": Field("int64", (), "cls", classes=_DIGITS)},
    "sequences": {"feat_text": Field("float32", (None, 12), "npy"), "feat_audio": Field("float32", (None, 5), "npy"),
                  "text": Field("str", (), "txt"), "label": Field("float32", (), "json", value_range=(-3.0, 3.0))},
    "multilabel": {"image": Field("uint8", (32, 32, 3), "jpg"), "feat_plot": Field("float32", (16,), "npy"),
                   "label": Field("int64", (4,), "npy", classes=("drama", "comedy", "horror", "news"))},
}


def input_fields(features: Features) -> list[str]:
    """The input field names of a schema (everything but the label), in schema order."""
    return [name for name in features if name != "label"]


def random_batch(features: Features, size: int, generator: torch.Generator) -> dict[str, Any]:
    """A batch dict in the ``mmdata.load`` layout with random values drawn from ``generator``.

    Args:
        features: the schema; the label field must be called ``label``.
        size: B.
        generator: the only source of randomness.

    Returns:
        ``__key__`` (B keys) and per field [B, *shape] tensors (variable axes padded to the longest of random
        lengths 1..8, with ``<field>_lengths`` [B] and ``<field>_mask`` [B, T]), a list of B strings for str
        fields, class ids [B], multi-hot [B, C] or values [B] for the label.
    """
    batch: dict[str, Any] = {"__key__": [f"check/test/{i}" for i in range(size)]}
    for name, field in features.items():
        if field.dtype == "str":
            words = torch.randint(0, 50, (size, 4), generator=generator).tolist()
            batch[name] = [" ".join(f"w{w}" for w in row) for row in words]
        elif name == "label":
            batch[name] = _label(field, size, generator)
        elif field.variable_axes:
            lengths = torch.randint(1, 9, (size,), generator=generator)
            mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
            x = torch.randn(size, mask.shape[1], *field.shape[1:], generator=generator)
            batch[name], batch[f"{name}_lengths"], batch[f"{name}_mask"] = x * mask[..., None], lengths, mask
        elif field.dtype == "uint8":
            batch[name] = torch.randint(0, 256, (size, *field.shape), generator=generator, dtype=torch.uint8)
        else:
            batch[name] = torch.randn(size, *field.shape, generator=generator)
    return batch


def _label(field: Field, size: int, generator: torch.Generator) -> torch.Tensor:
    if not field.classes:
        return torch.randn(size, generator=generator)
    if field.shape:  # multi-hot [C]
        return (torch.rand(size, len(field.classes), generator=generator) < 0.3).long()
    return torch.randint(len(field.classes), (size,), generator=generator)


class ArrayBatches:
    """Re-iterable batch dicts over arrays (``{name: [N, ...]}``, a ``label`` among them), reshuffled each epoch
    from ``make_rng(seed, "order", epoch)``: the training data of the checks' synthetic experiments."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.arrays, self.batch_size, self.seed, self.shuffle, self.epoch = arrays, batch_size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.arrays["label"])
        index = make_rng(self.seed, "order", self.epoch).permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            rows = index[start:start + self.batch_size]
            arrays = {k: torch.from_numpy(v[rows]) for k, v in self.arrays.items()}
            yield {"__key__": [f"r2/{i}" for i in rows], **arrays}
