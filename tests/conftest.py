"""Shared fixtures: a tiny hand-made split written through the real writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmdata.rng import make_rng
from mmdata.shards.write import write_split
from mmdata.types import Field

TOY_FEATURES = {
    "image": Field("uint8", (8, 8), "npy"),
    "feat_audio": Field("float32", (None, 3), "npy"),
    "text": Field("str", (), "txt"),
    "label": Field("int64", (), "cls", classes=("a", "b", "c")),
}


def toy_samples(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """n valid samples of TOY_FEATURES with varied lengths."""
    rng = make_rng(seed, "toy")
    return [{"__key__": f"toy/{split}/s{i:04d}", "image": rng.integers(0, 255, (8, 8), dtype=np.uint8),
             "feat_audio": rng.standard_normal((int(rng.integers(1, 7)), 3)).astype(np.float32),
             "text": f"sample {i}", "label": np.int64(i % 3)} for i in range(n)]


def write_toy(directory: Path, n: int = 40, max_samples: int = 5, **kwargs) -> dict:
    """Write n toy samples to ``directory`` as a split; return the manifest."""
    return write_split(toy_samples(n), TOY_FEATURES, directory, corpus="toy", split="train",
                       max_samples=max_samples, **kwargs)


@pytest.fixture
def toy_split(tmp_path: Path) -> Path:
    """A written toy split directory (40 samples, 8 shards)."""
    directory = tmp_path / "toy" / "train"
    write_toy(directory)
    return directory


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    their tiny tensors cost more to hand to a second thread than they save (10x on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
