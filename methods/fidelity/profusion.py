"""Controlled checks of Progressive Fusion (../shared/methods.md 2.2, 2.5): P1 (the B.1 synthetic regression,
ProFusion against concat late fusion) and P2 (zero context gives the base model).

Both run our own modules (:mod:`methods.late_fusion`, :mod:`methods.profusion`), not stand-ins. P1 trains
tens of independent trials per model at once (:mod:`methods.fidelity.stacked`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from methods import late_fusion, profusion
from methods.fidelity.schemas import SCHEMAS, input_fields, random_batch
from methods.fidelity.stacked import batch_order, predict_stacked, train_stacked
from methods.parallel import available_cores, run_parallel
from methods.fusions import FUSIONS
from methods.profusion_base import zero_context_difference
from mmdata.errors import ConfigError
from mmdata.metrics.robustness import robust_auc
from mmdata.rng import make_rng, torch_seed

#: The B.1 process's sizes and the training recipe [U in the paper; methods.md 2.2].
SETTINGS = {"d": 8, "dim_x": 8, "slope": 0.01, "n_train": 2000, "n_test": 2000, "steps": 2000, "batch_size": 256,
            "lr": 1e-3}
#: (eta, sigma_2) cells and trials per cell.
GRIDS = {"quick": {"eta": (0.5, 1.0), "sigma_2": (0.5,), "trials": 10},
         "full": {"eta": (0.25, 0.5, 1.0, 2.0), "sigma_2": (0.1, 0.5, 1.0), "trials": 30}}
#: Steps after which the paired test figures are also recorded (``by_step``: diagnostics, not the verdict).
CHECKPOINTS = (250, 500, 1000)
#: Test-time sigma_2 levels of the robustness curve (tau against concat).
TEST_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0)
#: Our nearest to the paper's "per modality Linear-ReLU-Linear-ReLU (hidden 32), concat(64) -> Linear".
BASE = {"dim": 32, "hidden": 64, "dropout": 0.0, "fusion": "concat", "regression_loss": "mse"}
PROFUSION = {**BASE, "steps": 2, "join": "concat", "join_layer": "input"}
ARCHITECTURE = (
    "late_fusion(dim=32, hidden=64, dropout=0, fusion=concat, mse): per field Linear(8,32)-LayerNorm-ReLU-"
    "Linear(32,32) (blocks.VectorEncoder), concat(64) -> Linear(64,64)-ReLU (fusions.ConcatFusion) -> "
    "Linear(64,1). The paper's: per field Linear-ReLU-Linear-ReLU (hidden 32), concat(64) -> Linear(64,1). "
    "Differences: a LayerNorm after each field's first layer, no ReLU after its second, and one more "
    "Linear(64,64)-ReLU (the fusion MLP) before the head. profusion: the same base, c = the 64-d fused "
    "embedding, bias-free W_j: 64 -> 8, each field's first layer takes [x_j ; W_j c] (16 inputs), R = 2.")
SCHEMA = SCHEMAS["vectors"]
FIELDS = input_fields(SCHEMA)


def b1_trial(rng: np.random.Generator, *, eta: float, sigma_2: float, settings: dict[str, Any]) -> dict[str, Any]:
    """One trial of the B.1 process with fresh W_1, W_2, W_y (methods.md 2.2)::

        Z ~ U[-2.5, 2.5]^d;  X_1 = lReLU(W_1 Z) - 2|eta| sin(W_2 Z) + e_1;  X_2 = sin(W_2 Z) + sigma_2 e_2;
        Y = W_y Z + e_y;  every e ~ N(0, I)

    Returns:
        ``{"train": {"feat_a": [N, dim_x], "feat_b": [N, dim_x], "label": [N]}, "test": {"feat_a": [M, dim_x],
        "feat_b": [1 + L, M, dim_x], "label": [M]}}`` float32; test ``feat_b`` holds X_2 at the trial's own
        sigma_2 then at each of :data:`TEST_SIGMAS`, all scaling the same e_2 (common random numbers).
    """
    d, dim_x, slope = settings["d"], settings["dim_x"], settings["slope"]
    w_1, w_2, w_y = rng.standard_normal((dim_x, d)), rng.standard_normal((dim_x, d)), rng.standard_normal(d)

    def draw(n: int, sigmas: tuple[float, ...]) -> dict[str, np.ndarray]:
        z = rng.uniform(-2.5, 2.5, (n, d))
        h, s = z @ w_1.T, np.sin(z @ w_2.T)
        x_1 = np.where(h > 0, h, slope * h) - 2 * abs(eta) * s + rng.standard_normal((n, dim_x))
        e_2 = rng.standard_normal((n, dim_x))
        x_2 = np.stack([s + sigma * e_2 for sigma in sigmas])
        y = z @ w_y + rng.standard_normal(n)
        return {"feat_a": x_1.astype(np.float32), "feat_b": x_2.astype(np.float32), "label": y.astype(np.float32)}

    train, test = draw(settings["n_train"], (sigma_2,)), draw(settings["n_test"], (sigma_2, *TEST_SIGMAS))
    train["feat_b"] = train["feat_b"][0]
    return {"train": train, "test": test}


def _trials(cells: list[tuple[float, float]], trials: int, seed_offset: int) -> list[dict[str, Any]]:
    """Every (eta, sigma_2, i) trial: its salts, the init seed both models share, and its data."""
    out = []
    for eta, sigma_2 in cells:
        for i in range(trials):
            salts = ("profusion_synthetic", eta, sigma_2, i)
            out.append({"eta": eta, "sigma_2": sigma_2, "init": torch_seed(seed_offset, *salts, "init"),
                        "order": torch_seed(seed_offset, *salts, "order"),
                        **b1_trial(make_rng(seed_offset, *salts), eta=eta, sigma_2=sigma_2, settings=SETTINGS)})
    return out


def _stack(trials: list[dict[str, Any]], split: str) -> dict[str, torch.Tensor]:
    """{key: [T, ...]} of one split over the trials."""
    return {k: torch.from_numpy(np.stack([t[split][k] for t in trials])) for k in trials[0][split]}


def _built(method: Any, options: dict[str, Any], seed: int) -> torch.nn.Module:
    """``method.build_model`` on the B.1 schema with torch seeded by ``seed`` (global RNG restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return method.build_model(SCHEMA, fields=FIELDS, **options)


def _mse(model: torch.nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
         split: dict[str, torch.Tensor], level: int | None) -> np.ndarray:
    """MSE per trial [T] on a stacked split (test: X_2 at noise ``level``; train: ``level`` None)."""
    feat_b = split["feat_b"] if level is None else split["feat_b"][:, level]
    pred = predict_stacked(model, params, buffers, {"feat_a": split["feat_a"], "feat_b": feat_b})
    return ((pred - split["label"]) ** 2).mean(dim=1).double().numpy()


def trial_mse(method: Any, options: dict[str, Any], trials: list[dict[str, Any]], order: torch.Tensor,
              checkpoints: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train one model per trial (stacked) and measure it.

    Returns:
        ``{"test": [T, 1 + L] test MSE per trial and X_2 noise level (own sigma_2, then TEST_SIGMAS) after the
        last step, "train": [T] train MSE then, "checkpoints": {step: [T] test MSE at the own sigma_2}}``.
    """
    models = [_built(method, options, t["init"]) for t in trials]
    train, test, seen = _stack(trials, "train"), _stack(trials, "test"), {}

    def measure(step: int, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> None:
        if step in checkpoints:
            seen[step] = _mse(models[0], params, buffers, test, 0)
            models[0].train()  # predict_stacked switched the template to eval mode

    params, buffers = train_stacked(method, models, train, order, lr=SETTINGS["lr"], callback=measure)
    levels = test["feat_b"].shape[1]
    return {"test": np.stack([_mse(models[0], params, buffers, test, lv) for lv in range(levels)], axis=1),
            "train": _mse(models[0], params, buffers, train, None), "checkpoints": seen}


def _trial_mse_of(model: str, trials: list[dict[str, Any]], order: torch.Tensor,
                  checkpoints: tuple[int, ...]) -> dict[str, Any]:
    """:func:`trial_mse` of P1's "concat" (late fusion) or "profusion" model, by name (picklable)."""
    method, options = {"concat": (late_fusion, BASE), "profusion": (profusion, PROFUSION)}[model]
    return trial_mse(method, options, trials, order, checkpoints)


def _paired(pro: np.ndarray, cat: np.ndarray) -> dict[str, float]:
    """Win rate and mean relative MSE change of ProFusion over concat from paired test MSEs [T]."""
    return {"win_rate": float(np.mean(pro < cat)), "mean_relative_mse_change": float(np.mean((pro - cat) / cat))}


def _summary(pro: np.ndarray, cat: np.ndarray) -> dict[str, Any]:
    """Paired figures over trials from test MSE [T, 1 + L] of ProFusion and concat."""
    tau = [robust_auc(TEST_SIGMAS, p[1:], c[1:], higher_is_better=False, reduce="mean") for p, c in zip(pro, cat)]
    return {"trials": len(pro), **_paired(pro[:, 0], cat[:, 0]), "mse_concat": float(cat[:, 0].mean()),
            "mse_profusion": float(pro[:, 0].mean()), "robust_auc": float(np.mean(tau)),
            "robust_auc_positive_rate": float(np.mean(np.asarray(tau) > 0))}


def _diagnostics(pro: dict[str, Any], cat: dict[str, Any]) -> dict[str, Any]:
    """Why the figures are what they are: train MSE after the last step (overfitting shows as train << test)
    and the paired figures at the earlier checkpoints (a learning curve; never used for ``passed``)."""
    return {"train_mse": {"concat": float(cat["train"].mean()), "profusion": float(pro["train"].mean())},
            "by_step": {str(step): _paired(pro["checkpoints"][step], cat["checkpoints"][step])
                        for step in sorted(pro["checkpoints"])}}


def _headline(result: dict[str, Any]) -> str:
    early = result["by_step"].get(str(CHECKPOINTS[0]))
    return (f"ProFusion wins {result['win_rate']:.0%} of {result['trials']} trials, mean MSE change "
            f"{result['mean_relative_mse_change']:+.1%}, tau {result['robust_auc']:+.3g} after "
            f"{result['settings']['steps']} steps (test MSE {result['mse_profusion']:.3g} vs concat "
            f"{result['mse_concat']:.3g}; train {result['train_mse']['profusion']:.3g} vs "
            f"{result['train_mse']['concat']:.3g})" + (
                f"; after {CHECKPOINTS[0]} steps: wins {early['win_rate']:.0%}, "
                f"{early['mean_relative_mse_change']:+.1%}" if early else ""))


def profusion_synthetic(*, seed_offset: int = 0, grid: str = "quick", trials: int | None = None,
                        steps: int | None = None) -> dict[str, Any]:
    """P1: ProFusion (R = 2, input join, concat) against concat late fusion on the B.1 regression.

    Per trial both models get the same data, initial seed and batch order; they are compared by test MSE at
    the trial's sigma_2 after the last step (paired). tau is ROBUSTAUC (``robust_auc``, MSE so sign-flipped,
    mean over the grid) of ProFusion against concat with X_2 re-noised at test time at :data:`TEST_SIGMAS`.

    Args:
        seed_offset: salt of every draw (data, W matrices, initial weights, batch order).
        grid: "quick" (eta in {0.5, 1}, sigma_2 = 0.5, 10 trials each) or "full" (4 x 3 cells x 30 trials).
        trials: trials per cell instead of the grid's (smaller for tests).
        steps: Adam steps instead of 2000 (smaller for tests).

    Returns:
        ``win_rate``, ``mean_relative_mse_change`` (negative = ProFusion better), ``trials`` (total),
        ``robust_auc``, ``cells`` (the same per (eta, sigma_2)), ``train_mse``, ``by_step`` (the paired
        figures at :data:`CHECKPOINTS`), ``parameters``, ``settings``, ``model``, ``paper``, ``passed``,
        ``measured``.

    Raises:
        ConfigError: an unknown grid.
    """
    if grid not in GRIDS:
        raise ConfigError(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}")
    spec, settings = GRIDS[grid], {**SETTINGS, "steps": steps or SETTINGS["steps"]}
    cells = [(eta, sigma) for eta in spec["eta"] for sigma in spec["sigma_2"]]
    runs = _trials(cells, trials or spec["trials"], seed_offset)
    order = torch.stack([batch_order(settings["n_train"], settings["steps"], settings["batch_size"],
                                     torch.Generator().manual_seed(t["order"])) for t in runs])
    # the two models' stacks side by side (one thread each: the CLI's default; more would not fork safely)
    processes = available_cores() if torch.get_num_threads() == 1 else 1
    cat, pro = run_parallel(_trial_mse_of, [(name, runs, order, CHECKPOINTS) for name in ("concat", "profusion")],
                            processes)
    result = {**_summary(pro["test"], cat["test"]), **_diagnostics(pro, cat), **_p1_context(grid, settings)}
    result["cells"] = [{"eta": eta, "sigma_2": sigma, **_summary(pro["test"][mask], cat["test"][mask])}
                       for eta, sigma in cells
                       for mask in [np.array([(t["eta"], t["sigma_2"]) == (eta, sigma) for t in runs])]]
    result["passed"] = {"win_rate_at_least_0.7": result["win_rate"] >= 0.7,
                        "mse_lower_on_average": result["mean_relative_mse_change"] < 0}
    result["measured"] = _headline(result)
    return result


def _p1_context(grid: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What P1 ran (grid, settings, architecture, parameter counts) and what the paper reports."""
    model = _built(profusion, PROFUSION, 0)
    return {"grid": grid, "settings": settings, "test_sigmas": list(TEST_SIGMAS), "model": ARCHITECTURE,
            "parameters": profusion.parameter_overhead(model),
            "paper": {"claim": "ProFusion beats concat in close to 90% of B.1 trials with about 8% lower MSE "
                               "(App. B.1, Fig. 8); methods.md 2.5 accepts >= 70% wins and a lower mean MSE",
                      "win_rate": 0.9, "mean_relative_mse_change": -0.08}}


def profusion_zero_context(*, seed_offset: int = 0, batch_size: int = 4) -> dict[str, Any]:
    """P2: ProFusion with R = 1, and with every W_j = 0 at R = 2, outputs exactly the base model's.

    Runs :func:`methods.profusion_base.zero_context_difference` (float64 copies, eval mode; the base model holds
    ProFusion's own weights minus the context columns) on a random batch of every schema of
    :data:`~methods.fidelity.schemas.SCHEMAS` with every fusion of :data:`~methods.fusions.FUSIONS`, with
    freshly initialised weights. Text fields join at the embedding (a string has no input tensor).

    Returns:
        ``max_abs_difference`` (float64, over everything), ``by_case`` {"<schema>/<fusion>/<steps1|w0>":
        difference}, ``max_abs_difference_float32`` (the same in float32: rounding alone, for scale),
        ``threshold``, ``paper``, ``passed``, ``measured``.
    """
    cases, single = {}, []
    for schema_name, schema in SCHEMAS.items():
        fields = input_fields(schema)
        layers = {n: "embedding" for n in fields if schema[n].dtype == "str"}
        batch = random_batch(schema, batch_size, torch.Generator().manual_seed(
            torch_seed(seed_offset, "profusion_zero_context", schema_name)))
        for fusion in FUSIONS:
            for steps, zero_back, tag in ((1, False, "steps1"), (2, True, "w0")):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(torch_seed(seed_offset, "profusion_zero_context", schema_name, fusion, tag))
                    model = profusion.build_model(schema, fields=fields, dim=8, hidden=16, fusion=fusion,
                                                  steps=steps, join_layer=layers)
                cases[f"{schema_name}/{fusion}/{tag}"] = zero_context_difference(model, batch, zero_back=zero_back)
                single.append(zero_context_difference(model, batch, zero_back=zero_back, dtype=torch.float32))
    worst = max(cases.values())
    return {"max_abs_difference": worst, "by_case": cases, "max_abs_difference_float32": max(single),
            "threshold": 1e-7, "batch_size": batch_size,
            "paper": {"claim": "c = 0 gives the base model: R = 1, or W = 0 for any R, equals it to 1e-7 "
                               "(App. E; methods.md 2.5 P2)", "max_abs_difference": 1e-7},
            "passed": {"max_abs_difference_at_most_1e-7": worst <= 1e-7},
            "measured": f"max |ProFusion - base| = {worst:.3g} in float64 ({max(single):.3g} in float32) over "
                        f"{len(cases)} cases (R = 1, and W = 0 at R = 2; {len(SCHEMAS)} schemas x "
                        f"{len(FUSIONS)} fusions)"}
