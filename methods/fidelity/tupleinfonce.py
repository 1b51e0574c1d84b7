"""Controlled checks of TupleInfoNCE (../shared/methods.md 5.4): T2 (a weak modality's information is kept by
TupleInfoNCE and lost by InfoNCE) and T3 (the sign of the REINFORCE update).

T2 trains our own :mod:`methods.tupleinfonce` model with its own loss (:func:`methods.tuple_contrast.views_loss`)
and default negatives (:class:`methods.tuple_contrast.DisturbSampler`), scores it with the search's reward
(:func:`methods.tuple_search.cross_modal_accuracy`) and probes it with R2's ridge probe. T3 runs the search's
:class:`methods.tuple_search.GaussianPolicy`. (The module is not named ``tuple``: importing it into the package
would bind ``methods.fidelity.tuple`` and shadow the builtin there.)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from methods import tupleinfonce
from methods.fidelity.refnet import probe_r2
from methods.fidelity.stacked import batch_order
from methods.tuple_contrast import DisturbSampler, dropout_masks, project, views_loss
from methods.tuple_search import RATIO_LR, RATIO_STD, GaussianPolicy, cross_modal_accuracy
from mmdata.rng import make_rng, torch_seed
from mmdata.samplers import batch_rng
from mmdata.types import Field

#: T2's process and recipe (methods.md 5.4): latents s (shared), u (only in v1), w (only in v2).
SETTINGS = {"dim_s": 4, "dim_u": 16, "dim_w": 4, "dim_v1": 32, "dim_v2": 16, "noise_v1": 0.05, "noise_v2": 0.3,
            "positive_noise": 0.05, "temperature": 0.1, "batch_size": 256, "steps": 1500, "lr": 1e-3,
            "n_train": 4096, "n_test": 2048, "pool": 256, "negatives_per_modality": 4, "modality_dropout": 0.0}
SCHEMA = {"feat_a": Field("float32", (32,), "npy", description="v1 = tanh(A1 [s; u]) + 0.05 e"),
          "feat_b": Field("float32", (16,), "npy", description="v2 = tanh(A2 [s; w]) + 0.3 e (the weak modality)"),
          "label": Field("float32", (), "npy", description="unused (no fine-tuning)")}
FIELDS = ["feat_a", "feat_b"]
#: Our nearest to "per-modality Linear-ReLU(64), concatenated -> 16-d, normalised".
MODEL = {"dim": 64, "hidden": 16, "proj_dim": 16, "dropout": 0.0, "strength": 0.0}
ARCHITECTURE = ("tupleinfonce(dim=64, hidden=16, proj_dim=16): per field Linear-LayerNorm-ReLU-Linear(64) "
                "(blocks.VectorEncoder), concat(128) -> Linear(128, 16)-ReLU (fusions.ConcatFusion: F_emb) -> "
                "projection Linear(16, 16) -> L2 normalise (g). The spec's: per field Linear-ReLU(64), concat -> "
                "16-d, normalised. Differences: a LayerNorm and a second Linear per field, and the projection "
                "after the 16-d ReLU layer.")
METHODS = {"tupleinfonce": "tuple", "infonce": "infonce"}


def weak_modality_data(rng: np.random.Generator, n: int, mixing: tuple[np.ndarray, np.ndarray],
                       settings: dict[str, Any]) -> dict[str, np.ndarray]:
    """n samples of T2's process: s, u, w ~ N(0, I); v1 = tanh(A1 [s; u]) + noise_v1 e, v2 = tanh(A2 [s; w]) +
    noise_v2 e.

    Args:
        mixing: (A1 [dim_v1, dim_s + dim_u], A2 [dim_v2, dim_s + dim_w]).

    Returns:
        float32 ``{"feat_a": [n, 32], "feat_b": [n, 16], "s": [n, 4], "u": [n, 16], "w": [n, 4]}``.
    """
    s, u, w = (rng.standard_normal((n, settings[f"dim_{k}"])) for k in ("s", "u", "w"))
    v1 = np.tanh(np.hstack([s, u]) @ mixing[0].T) + settings["noise_v1"] * rng.standard_normal((n, settings["dim_v1"]))
    v2 = np.tanh(np.hstack([s, w]) @ mixing[1].T) + settings["noise_v2"] * rng.standard_normal((n, settings["dim_v2"]))
    return {k: v.astype(np.float32) for k, v in {"feat_a": v1, "feat_b": v2, "s": s, "u": u, "w": w}.items()}


def _draw(seed: tuple, settings: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Fresh mixing matrices (entries N(0, 1 / inputs): unit-variance pre-activations) and both splits."""
    rng = make_rng(*seed)
    inputs = (settings["dim_s"] + settings["dim_u"], settings["dim_s"] + settings["dim_w"])
    mixing = tuple(rng.standard_normal((settings[f"dim_v{i + 1}"], k)) / math.sqrt(k) for i, k in enumerate(inputs))
    return {split: weak_modality_data(rng, settings[f"n_{split}"], mixing, settings) for split in ("train", "test")}


def _rows(data: dict[str, np.ndarray], rows: Any) -> dict[str, Any]:
    index = np.asarray(rows)
    return {"__key__": [f"t2/{i}" for i in index], **{n: torch.from_numpy(data[n][index]) for n in FIELDS}}


def _train(objective: str, data: dict[str, np.ndarray], seed: tuple, settings: dict[str, Any]) -> torch.nn.Module:
    """One model trained contrastively for ``steps`` Adam steps; the initial weights, batch order, positive noise
    and negatives depend on the seed only, so both objectives meet the same draws."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(*seed, "init"))
        model = tupleinfonce.build_model(SCHEMA, fields=FIELDS, objective=objective, **MODEL,
                                         temperature=settings["temperature"],
                                         modality_dropout=settings["modality_dropout"])
    order = batch_order(settings["n_train"], settings["steps"], settings["batch_size"],
                        torch.Generator().manual_seed(torch_seed(*seed, "order")))
    noise = torch.Generator().manual_seed(torch_seed(*seed, "positive"))
    sampler = DisturbSampler(tuple(FIELDS), len(FIELDS) * settings["negatives_per_modality"])
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    model.train()
    for step, rows in enumerate(order.numpy()):
        anchor = _rows(data, rows)
        key = {**anchor, **{n: anchor[n] + settings["positive_noise"] * torch.randn(anchor[n].shape, generator=noise)
                            for n in FIELDS}}
        tuples = sampler(len(rows), batch_rng(torch_seed(*seed, "tuples"), 0, step)) if objective == "tuple" else None
        masks = dropout_masks(model, len(rows), (torch_seed(*seed, "dropout"), 0, step))
        loss = views_loss(model, anchor, key, tuples, anchor_mask=masks[0], key_mask=masks[1])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def _probe(train: torch.Tensor, test: torch.Tensor, data: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Ridge R^2 of s, u, w from an embedding (fitted on the train split's, scored on the test split's)."""
    return {k: probe_r2(train, torch.from_numpy(data["train"][k]), test, torch.from_numpy(data["test"][k]))
            for k in ("s", "u", "w")}


@torch.no_grad()
def _measure(model: torch.nn.Module, data: dict[str, dict[str, np.ndarray]], pool: int) -> dict[str, Any]:
    """Probe R^2 from the contrastive embedding g and from F_emb (the fine-tuned representation), and Acc_k
    on a pool of the test split."""
    parts = {split: model.encode(_rows(d, np.arange(len(d["s"])))) for split, d in data.items()}
    g, fused = ({s: f(p) for s, p in parts.items()} for f in (lambda p: project(model, p), model.fusion))
    reward = cross_modal_accuracy(model, [_rows(data["test"], np.arange(pool))])
    return {"r2": _probe(g["train"], g["test"], data), "r2_fused": _probe(fused["train"], fused["test"], data),
            "accuracy": reward["accuracy"], "chance": reward["chance"]}


def _per_seed(seed_offset: int, seeds: int, settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    for s in range(seeds):
        seed = (seed_offset, "tuple_weak_modality", s)
        data = _draw(seed, settings)
        for name, objective in METHODS.items():
            out[name].append(_measure(_train(objective, data["train"], seed, settings), data, settings["pool"]))
    return out


def tuple_weak_modality(*, seed_offset: int = 0, seeds: int = 5, steps: int | None = None,
                        negatives_per_modality: int = 4, modality_dropout: float = 0.0, dim_u: int = 16,
                        noise_v2: float = 0.3) -> dict[str, Any]:
    """T2 (methods.md 5.4): TupleInfoNCE (w_k = 1) against in-batch InfoNCE, same data, initial weights, batches
    and positive noise per seed; then ridge probes of the latents from the 16-d embedding g (the verdict) and
    from F_emb (diagnostic), and the cross-modal discrimination Acc_k on a pool of 256 test rows (no modality
    dropout in training, as the spec's recipe: the placeholder queries are out of distribution for both).

    The disturbed negatives are ``negatives_per_modality`` partners per anchor and modality, each standing for
    all B - 1 (:func:`methods.tuple_contrast.slot_log_weights`' population weight, so w_k = 1 keeps the
    full-block meaning): the full B - 1 cost about 300 ms per step on one thread, 8 about 10 ms.

    Args:
        seed_offset: salt of every draw. seeds: independent repeats. steps: Adam steps instead of 1500 (tests).

    Returns:
        ``r2_weak`` {method: [R^2 of w per seed]}, ``r2`` {latent: {method: [per seed]}}, ``accuracy``
        {method: {field: [per seed]}}, ``chance``, ``mean``, ``settings``, ``model``, ``paper``, ``passed``,
        ``measured``.
    """
    settings = {**SETTINGS, "steps": steps or SETTINGS["steps"], "negatives_per_modality": negatives_per_modality,
                "modality_dropout": modality_dropout, "dim_u": dim_u, "noise_v2": noise_v2}
    rows = _per_seed(seed_offset, seeds, settings)
    r2 = {k: {m: [r["r2"][k] for r in rows[m]] for m in METHODS} for k in ("s", "u", "w")}
    fused = {k: {m: [r["r2_fused"][k] for r in rows[m]] for m in METHODS} for k in ("s", "u", "w")}
    accuracy = {m: {f: [r["accuracy"][f] for r in rows[m]] for f in FIELDS} for m in METHODS}
    mean = {**{f"r2_{k}_{m}": float(np.mean(v)) for k, by in r2.items() for m, v in by.items()},
            **{f"acc_{f}_{m}": float(np.mean(v)) for m, by in accuracy.items() for f, v in by.items()},
            **{f"r2_fused_{k}_{m}": float(np.mean(v)) for k, by in fused.items() for m, v in by.items()}}
    gaps = np.subtract(r2["w"]["tupleinfonce"], r2["w"]["infonce"])
    need = math.ceil(0.8 * seeds)
    result = {"r2_weak": r2["w"], "r2": r2, "r2_fused": fused, "accuracy": accuracy,
              "chance": rows["infonce"][0]["chance"], "mean": mean, "seeds": seeds, "settings": settings,
              "model": ARCHITECTURE, "w_gap_per_seed": gaps.tolist()}
    result["passed"] = {
        f"w_r2_higher_by_0.2_in_{need}_of_{seeds}": int((gaps >= 0.2).sum()) >= need,
        "s_r2_within_0.1": abs(mean["r2_s_tupleinfonce"] - mean["r2_s_infonce"]) <= 0.1,
        "u_r2_within_0.1": abs(mean["r2_u_tupleinfonce"] - mean["r2_u_infonce"]) <= 0.1,
        "acc2_higher": mean["acc_feat_b_tupleinfonce"] > mean["acc_feat_b_infonce"]}
    result["paper"] = {"claim": "TupleInfoNCE keeps weak modalities that InfoNCE ignores (section 3, App. E); "
                                "methods.md 5.4 T2: ridge R^2 of w >= 0.2 higher with TupleInfoNCE (w_k = 1) in "
                                ">= 4 of 5 seeds, R^2 of s and u within 0.1, Acc_2 higher"}
    result["measured"] = (f"R^2 of w {mean['r2_w_infonce']:.2f} (InfoNCE) -> {mean['r2_w_tupleinfonce']:.2f} "
                          f"(TupleInfoNCE), gap >= 0.2 in {int((gaps >= 0.2).sum())}/{seeds} seeds; s "
                          f"{mean['r2_s_infonce']:.2f} -> {mean['r2_s_tupleinfonce']:.2f}, u "
                          f"{mean['r2_u_infonce']:.2f} -> {mean['r2_u_tupleinfonce']:.2f}; Acc_2 "
                          f"{mean['acc_feat_b_infonce']:.3f} -> {mean['acc_feat_b_tupleinfonce']:.3f}, Acc_1 "
                          f"{mean['acc_feat_a_infonce']:.3f} -> {mean['acc_feat_a_tupleinfonce']:.3f} "
                          f"(chance {result['chance']:.4f}); from F_emb, w {mean['r2_fused_w_infonce']:.2f} -> "
                          f"{mean['r2_fused_w_tupleinfonce']:.2f}")
    return result


def _one_update(rewards_of: Any, seed: tuple, clones: int) -> tuple[list[float], float]:
    """(change of the ratio policy's mean, REINFORCE ascent direction on mu_1 = -d loss / d mu_1) after one step
    from mean 0 on ``rewards_of(actions)``."""
    policy = GaussianPolicy([0.0, 0.0, 0.0], RATIO_STD, RATIO_LR)
    actions = policy.sample(clones, torch.Generator().manual_seed(torch_seed(*seed)))
    policy.update(actions, rewards_of(actions))
    return policy.mean.detach().tolist(), -float(policy.mean.grad[0])


def tuple_reinforce_sign(*, seed_offset: int = 0, trials: int = 20, clones: int = 5) -> dict[str, Any]:
    """T3 (methods.md 5.4): one REINFORCE step of the search's log-ratio policy (N(0, 0.5^2 I), Adam lr 0.25,
    ``clones`` actions) on rewards increasing in alpha_1 (r = alpha_1), decreasing (r = -alpha_1) and equal
    (r = 0.5 for every clone), over ``trials`` independent draws of the actions. Adam's first step is lr times
    the gradient's sign, so the moves are +-0.25 exactly; the policy gradient itself is reported beside them.

    Returns:
        ``delta_mu1`` {"increasing", "decreasing": [per trial]}, ``ascent_mu1`` (the same keys: -d loss / d mu_1),
        ``max_abs_delta_equal`` (every component), ``paper``, ``passed``, ``measured``.
    """
    seeds = [(seed_offset, "tuple_reinforce_sign", t) for t in range(trials)]
    runs = {name: [_one_update(f, s, clones) for s in seeds]
            for name, f in (("increasing", lambda a: a[:, 0]), ("decreasing", lambda a: -a[:, 0]),
                            ("equal", lambda a: [0.5] * len(a)))}
    up, down = ([r[0][0] for r in runs[k]] for k in ("increasing", "decreasing"))
    equal = max(abs(v) for r in runs["equal"] for v in r[0])
    return {"delta_mu1": {"increasing": up, "decreasing": down}, "max_abs_delta_equal": equal, "trials": trials,
            "ascent_mu1": {k: [r[1] for r in runs[k]] for k in ("increasing", "decreasing")}, "clones": clones,
            "policy": {"std": RATIO_STD, "lr": RATIO_LR},
            "paper": {"claim": "REINFORCE raises the probability of better-rewarded ratios (Eqs. 6-7); methods.md "
                               "5.4 T3: rewards increasing in alpha_1 move mu_1 up after one step; equal rewards "
                               "give a zero update"},
            "passed": {"increasing_rewards_move_mu1_up": min(up) > 0, "decreasing_rewards_move_mu1_down": max(down) < 0,
                       "equal_rewards_zero_update": equal == 0.0},
            "measured": f"mu_1 moved by {min(up):+.3g}..{max(up):+.3g} on increasing rewards, {min(down):+.3g}.."
                        f"{max(down):+.3g} on decreasing, max |change| {equal:.3g} on equal rewards "
                        f"({trials} trials x {clones} clones)"}
