"""Subprocess side of ``tests/test_reproducible.py``: synth and shard every corpus, print every file's sha256.

Run as ``python -m tests.repro_worker <out>`` from the repository root; the environment (``OPENBLAS_CORETYPE``,
``NPY_DISABLE_CPU_FEATURES``, ...) is the machine being imitated. Writes ``<out>/raw/<corpus>`` and
``<out>/shards/<corpus>`` with relative paths (the manifests record the root as given), then prints one JSON
object: ``{"files": {relative path: sha256}, "probes": {name: sha256}}``. The probes are computations whose bits
are known to depend on the BLAS kernel and on numpy's CPU dispatch; the test compares them to prove that the two
environments really differ.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
#: Smaller synth sizes than params.yaml where a corpus is slow to build (same code paths, a fraction of the time).
#: CREMA-D keeps its broken clips, hence 9+ actors and 2+ sentences. SUN RGB-D keeps its size: a BLAS rotation
#: changed only some of its float32 points, the 168 scenes of params.yaml show it, a few dozen need not.
SIZES = {
    "avmnist": {"train": 120, "test": 40},
    "crema_d": {"actors": 10, "sentences": 2},
    "nyuv2": {"train": 12, "test": 6},
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probes() -> dict[str, str]:
    """Hashes of results that differ between BLAS kernels and between numpy's CPU code paths."""
    rng = np.random.default_rng(0)
    matrix, values = rng.normal(size=(64, 64)), rng.uniform(-5.0, 5.0, 4096)
    return {"blas": _sha((matrix @ matrix @ matrix).tobytes()), "numpy_exp": _sha(np.exp(values).tobytes())}


def build(out: Path, names: list[str]) -> dict[str, str]:
    """Synth and shard ``names`` under ``out`` (the working directory meanwhile); relative path -> sha256."""
    from mmdata.shards.build import shard_corpus
    from mmdata.synth import SYNTHS

    params = yaml.safe_load((REPO / "params.yaml").read_text())["corpora"]
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)
    for name in names:
        block = params[name]
        raw, shards = Path("raw", name), Path("shards", name)
        SYNTHS[name](raw, **{**block["synth"], **SIZES.get(name, {})})
        # The small corpora keep every broken item: a bad-input threshold is not what is tested here.
        shard = {**block["shard"], "max_skip_fraction": 0.5}
        shard_corpus(name, raw, shards, reader=block.get("reader", {}), progress=False, **shard)
    return {p.as_posix(): _sha(p.read_bytes()) for p in sorted(Path(".").rglob("*")) if p.is_file()}


def main(argv: list[str]) -> None:
    from mmdata.synth import SYNTHS

    names = argv[1].split(",") if len(argv) > 1 else sorted(SYNTHS)
    result = {"probes": probes(), "files": build(Path(argv[0]).resolve(), names)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
