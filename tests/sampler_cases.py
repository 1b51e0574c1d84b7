"""Reference cases for the samplers, ``gather`` and ``tuple_infonce``: their outputs are pinned (dvc.lock's training
results depend on exactly which tuples are drawn), so a faster implementation must reproduce them.

``cases()`` runs every function on several seeds, batch sizes and modality counts and returns
name -> array. Index-like results (ints, bools, gathered copies) are compared bitwise through a sha256 of their
dtype, shape and bytes; float results of arithmetic (losses, gradients) are stored and compared with
``allclose(rtol=1e-6, atol=1e-6)`` in float64 (where rounding cannot reach 1e-6, so the arithmetic is pinned);
in float32 the cancellation in log-sum-exp over logits up to ``|a| |n| / t`` (~100 for dot similarity at
t = 0.1) makes any reordering of the sums differ by ~1e-5, so float32 results are held to 1e-5. After every sampler call one more ``rng.integers`` draw is recorded, so a
change in how many random numbers a sampler consumes is caught too.

Regenerate (only when a change of draws is intended and the lead agreed):
``python -m tests.sampler_cases`` writes ``tests/sampler_reference.npz``.
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmdata.rng import make_rng
from mmdata.samplers import (as_tuples, batch_rng, derangements, different_label_pairs, distinct_partners,
                             drop_batch, drop_tuples, dot_similarity, gather, hard_negatives, label_fraction,
                             marginal_permute, modality_dropout, negative_dataset, same_label_pairs, tuple_disturb,
                             tuple_infonce)
from mmdata.types import Tuples

REFERENCE = Path(__file__).with_name("sampler_reference.npz")
SEEDS = (0, 1, 7)
MODALITIES = ("image", "audio_spec", "text", "depth")
Case = tuple[str, Any]


def digest(value: Any) -> int:
    """First 64 bits of the sha256 of dtype, shape and bytes of an array or tensor (bitwise identity)."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return int.from_bytes(hashlib.sha256(header + array.tobytes()).digest()[:8], "little")


def _drawn(name: str, result: Any, rng: np.random.Generator) -> Iterator[Case]:
    """The result's digest and the rng's next draw (catches a change in the number of draws consumed)."""
    yield name, digest(result.idx if isinstance(result, Tuples) else result)
    yield f"{name}/next", digest(rng.integers(0, 2 ** 62, size=2))


def _permutation_cases() -> Iterator[Case]:
    for seed, n in itertools.product(SEEDS, (2, 3, 5, 32, 64, 65, 128, 256)):
        for count in (None, 1, 5):
            rng = make_rng(seed, "derange", n)
            yield from _drawn(f"derangements/{seed}/{n}/{count}", derangements(n, rng, count=count), rng)
        for k, count in itertools.product(sorted({0, 1, min(16, n - 1), n - 1}), (None, 3)):
            rng = make_rng(seed, "partners", n, k)
            yield from _drawn(f"partners/{seed}/{n}/{k}/{count}", distinct_partners(n, k, rng, count=count), rng)
    for seed, epoch, b in itertools.product(SEEDS, (0, 3), (0, 1, 99)):
        yield f"batch_rng/{seed}/{epoch}/{b}", digest(batch_rng(seed, epoch, b).integers(0, 2 ** 62, size=4))
        yield f"batch_rng/{seed}/{epoch}/{b}/salt", digest(batch_rng(seed, epoch, b, "mdm", 2).random(3))


#: Ratio configurations by name, as a function of the modality count m.
RATIOS: dict[str, Callable[[int], Any]] = {
    "none": lambda m: None, "all": lambda m: {"all": 1.0},
    "mixed": lambda m: {"all": 1.0, "image": 1.0, "audio_spec": 2.0} if m >= 2 else {"all": 1.0, "image": 3.0},
    "ones": lambda m: [1.0] * m, "skewed": lambda m: [0.5] + [float(i + 1) for i in range(m)]}


def _disturb_cases() -> Iterator[Case]:
    for seed, n, m in itertools.product(SEEDS, (3, 5, 32, 128, 256), (1, 2, 3, 4)):
        for kind, ratios in RATIOS.items():
            for negatives, k in itertools.product(sorted({1, 4, 16, n + 3}), range(1, m + 1)):
                rng = make_rng(seed, "disturb", n, m, negatives, k)
                name = f"tuple_disturb/{seed}/{n}/{m}/{kind}/{negatives}/{k}"
                try:
                    out = tuple_disturb(n, rng, modalities=MODALITIES[:m], num_negatives=negatives,
                                        ratios=ratios(m), k=k)
                except ValueError as error:  # infeasible requests must keep failing, with the same message
                    yield name, digest(np.array(str(error)))
                    continue
                yield from _drawn(name, out, rng)


def _marginal_cases() -> Iterator[Case]:
    for seed, n, m in itertools.product(SEEDS, (2, 3, 5, 32, 128, 256), (1, 2, 3, 4)):
        for negatives, joint in itertools.product((1, 3, 16), (False, True)):
            if joint and (m < 2 or n < 3):
                continue
            rng = make_rng(seed, "marginal", n, m, negatives)
            out = marginal_permute(n, rng, modalities=MODALITIES[:m], num_negatives=negatives, exclude_joint=joint)
            yield from _drawn(f"marginal_permute/{seed}/{n}/{m}/{negatives}/{joint}", out, rng)
        rng = make_rng(seed, "negative_dataset", n)
        index = {"key": [f"k{i}" for i in range(n)]}
        yield from _drawn(f"negative_dataset/{seed}/{n}/{m}", negative_dataset(index, rng, modalities=MODALITIES[:m]),
                          rng)


def _batch(n: int, m: int, seed: int) -> dict[str, Any]:
    """A batch dict with tensor fields of several shapes and dtypes, and one list-of-str field."""
    rng = make_rng(seed, "batch", n, m)
    shapes = [(3, 4), (), (2,), (5, 2)]
    batch: dict[str, Any] = {}
    for i, name in enumerate(MODALITIES[:m]):
        if i == 2:
            batch[name] = [f"text {seed} {j}" for j in range(n)]
        else:
            batch[name] = torch.from_numpy(rng.standard_normal((n, *shapes[i])).astype(np.float32))
    return batch


def _dropout_cases() -> Iterator[Case]:
    for seed, n, m in itertools.product(SEEDS, (1, 5, 32, 128, 256), (2, 3, 4)):
        mods = MODALITIES[:m]
        for p, scope in itertools.product((0.0, 0.6, 1.0), ("batch", "row")):
            rng = make_rng(seed, "dropout", n, m)
            mask = modality_dropout(n, rng, modalities=mods, p=p, scope=scope)
            name = f"modality_dropout/{seed}/{n}/{m}/{p}/{scope}"
            yield from _drawn(name, mask, rng)
            if n >= 3:
                tuples = tuple_disturb(n, make_rng(seed, "t", n), modalities=mods, num_negatives=4)
                yield f"{name}/drop_tuples", digest(drop_tuples(tuples, mask).idx)
            out = drop_batch(_batch(n, m, seed), mask, mods, placeholder=-2.0)
            for key in sorted(out):
                yield f"{name}/drop_batch/{key}", _value_digest(out[key])


def _value_digest(value: Any) -> int:
    if isinstance(value, list):
        return digest(np.array([str(v) for v in value] if value else np.zeros(0)))
    return digest(value)


def _label_cases() -> Iterator[Case]:
    for seed, n in itertools.product(SEEDS, (7, 100, 1000)):
        rng = make_rng(seed, "labels", n)
        labels = {"int": rng.integers(0, 5, n), "float": rng.uniform(-3, 3, n),
                  "hot": rng.random((n, 6)) < 0.3, "ids": [list(rng.choice(6, rng.integers(0, 3), replace=False))
                                                          for _ in range(n)]}
        for kind, value in labels.items():
            index = {"label": value} if kind == "int" else value
            draw = make_rng(seed, "label_fraction")
            out = label_fraction(index, draw, fractions=(0.05, 0.1, 0.2, 0.5, 1.0))
            for fraction, rows in out.items():
                yield f"label_fraction/{seed}/{n}/{kind}/{fraction}", digest(rows)
            yield f"label_fraction/{seed}/{n}/{kind}/next", digest(draw.integers(0, 2 ** 62, size=2))


def _pair_cases() -> Iterator[Case]:
    for seed, n in itertools.product(SEEDS, (2, 9, 64)):
        rng = make_rng(seed, "pairs", n)
        single, multi = rng.integers(0, 3, n), (rng.random((n, 4)) < 0.4).astype(np.int64)
        emb = torch.from_numpy(rng.standard_normal((n, 8)).astype(np.float32))
        for kind, labels in (("single", single), ("multi", multi)):
            yield f"pairs/{seed}/{n}/{kind}/same", digest(np.stack(same_label_pairs(labels)))
            yield f"pairs/{seed}/{n}/{kind}/different", digest(np.stack(different_label_pairs(labels)))
            for k in sorted({1, 3, n + 1}):
                hard = hard_negatives(emb, labels, k)
                yield f"pairs/{seed}/{n}/{kind}/hard/{k}", digest(hard)
                yield f"pairs/{seed}/{n}/{kind}/hard_dot/{k}", digest(hard_negatives(emb, labels, k,
                                                                                     similarity=dot_similarity))
                yield f"pairs/{seed}/{n}/{kind}/as_tuples/{k}", digest(as_tuples(hard, MODALITIES[:3]).idx)


def _gather_values(n: int, seed: int) -> dict[str, Any]:
    """Per-modality values of every kind gather accepts: tensors of several shapes and dtypes, numpy, lists."""
    rng = make_rng(seed, "values", n)
    return {"image": torch.from_numpy(rng.standard_normal((n, 3, 4)).astype(np.float32)),
            "audio_spec": rng.integers(0, 255, (n, 5), dtype=np.uint8),
            "text": [f"caption {i}" for i in range(n)],
            "depth": torch.from_numpy(rng.integers(-9, 9, n)),
            "emb": torch.from_numpy(rng.standard_normal((n, 16)).astype(np.float32)),
            "flag": torch.from_numpy(rng.random(n) < 0.5)}


def _gather_tuples(n: int, m: int, seed: int, names: tuple[str, ...]) -> dict[str, Tuples]:
    disturb = tuple_disturb(n, make_rng(seed, "g", n, m), modalities=names, num_negatives=8 if n > 8 else 2,
                            ratios=[1.0] * (m + 1))
    mask = modality_dropout(n, make_rng(seed, "gd", n), modalities=names, p=1.0, scope="row") if m > 1 else None
    out = {"disturb": disturb,
           "marginal": marginal_permute(n, make_rng(seed, "gm", n), modalities=names, num_negatives=3)}
    if mask is not None:
        out["dropped"] = drop_tuples(disturb, mask)
    return out


def _gather_cases() -> Iterator[Case]:
    layouts = (("image", "text"), ("image", "audio_spec", "depth"), ("emb", "flag", "text", "image"), ("emb",))
    for seed, n, names in itertools.product(SEEDS, (3, 32, 128), layouts):
        values = _gather_values(n, seed)
        for kind, tuples in _gather_tuples(n, len(names), seed, names).items():
            for placeholder in (0.0, 7.0):
                out = gather(values, tuples, placeholder=placeholder)
                name = f"gather/{seed}/{n}/{'+'.join(names)}/{kind}/{placeholder}"
                yield f"{name}/keys", digest(np.array(list(out)))
                for key, value in out.items():
                    yield f"{name}/{key}", _nested_digest(value)
            if "emb" in names and seed == SEEDS[0]:
                yield f"{name}/grad", _gather_grad(values["emb"], tuples, seed)


def _nested_digest(value: Any) -> int:
    if isinstance(value, list):
        return digest(np.array([[str(v) for v in row] for row in value]))
    return digest(value)


def _gather_grad(emb: torch.Tensor, tuples: Tuples, seed: int) -> np.ndarray:
    """Gradient of a weighted sum of the gathered embeddings with respect to the embeddings."""
    leaf = emb.clone().requires_grad_(True)
    taken = gather({**_gather_values(len(emb), seed), "emb": leaf}, tuples, placeholder=7.0)["emb"]
    weights = torch.from_numpy(make_rng(seed, "w").standard_normal(tuple(taken.shape)).astype(np.float32))
    (taken * weights).sum().backward()
    return leaf.grad.numpy()


def _loss_inputs(n: int, k: int, d: int, seed: int, dtype: type) -> list[torch.Tensor]:
    rng = make_rng(seed, "loss", n, k, d)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in ((n, d), (n, d), (n, k, d))]
    arrays[2][0, 0] = 0.0  # a zero (placeholder-like) negative: normalisation's eps path
    return [torch.from_numpy(a).requires_grad_(True) for a in arrays]


def _loss_cases() -> Iterator[Case]:
    """float64 cases pin the arithmetic (rounding ~1e-13, so 1e-6 is strict); float32 ones the usual dtype."""
    shapes = ((1, 1, 8), (5, 4, 8), (5, 4, 128), (32, 16, 8), (7, 3, 3))
    for seed, (n, k, d), dtype in itertools.product(SEEDS, shapes, (np.float64, np.float32)):
        for similarity, temperature, masked in itertools.product(("cosine", "dot"), (0.1, 0.5), (False, True)):
            inputs = _loss_inputs(n, k, d, seed, dtype)
            mask = torch.from_numpy(make_rng(seed, "mask").random((n, k)) < 0.7) if masked else None
            loss = tuple_infonce(*inputs, temperature=temperature, similarity=similarity, negative_mask=mask)
            loss.sum().backward()
            name = f"tuple_infonce/{np.dtype(dtype).name}/{seed}/{n}/{k}/{d}/{similarity}/{temperature}/{masked}"
            yield name, loss.detach().numpy()
            if seed == SEEDS[0] and dtype == np.float64:  # one seed's float64 gradients keep the file small
                for label, tensor in zip(("anchor", "positive", "negatives"), inputs):
                    yield f"{name}/grad_{label}", tensor.grad.numpy()


GENERATORS: tuple[Callable[[], Iterator[Case]], ...] = (
    _permutation_cases, _disturb_cases, _marginal_cases, _dropout_cases, _label_cases, _pair_cases, _gather_cases,
    _loss_cases)


def cases() -> dict[str, Any]:
    """Every reference case: name -> digest int (bitwise) or float32 array (allclose)."""
    out: dict[str, Any] = {}
    for generate in GENERATORS:
        for name, value in generate():
            assert name not in out, f"duplicate case {name}"
            out[name] = value
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    found = cases()
    digests = {name: value for name, value in found.items() if isinstance(value, int)}
    floats = {name: value for name, value in found.items() if not isinstance(value, int)}
    np.savez_compressed(REFERENCE, names=np.array(list(digests)), digests=np.array(list(digests.values()), np.uint64),
                        **floats)
    print(f"wrote {len(found)} cases to {REFERENCE}")
