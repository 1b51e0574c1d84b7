"""Forecasting metrics for scalar targets (MultiBench stocks: next-day squared log return).

MultiBench's finance examples report MSE (``test(..., task='regression')`` -> ``{'MSE': ...}``); the
Progressive Fusion appendix adds Pearson r ("CORR"). MAE is kept because squared returns are heavy-tailed
and MSE alone is driven by a few days.
"""
from __future__ import annotations

import numpy as np


def forecast_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MSE, MAE and Pearson r of predictions against targets.

    Args:
        pred: predicted values [n] (any shape that flattens to n).
        truth: true values [n].

    Returns:
        ``mse``, ``mae``, ``corr`` (0.0 when undefined: constant side or n < 2, so metrics.json stays JSON).
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if pred.shape != truth.shape or pred.size == 0:
        raise ValueError(f"pred and truth must be non-empty and equally long, got {pred.shape} vs {truth.shape}")
    err = pred - truth
    corr = 0.0
    if pred.size > 1 and np.ptp(pred) > 0 and np.ptp(truth) > 0:
        corr = float(np.corrcoef(pred, truth)[0, 1])
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
            "corr": corr if np.isfinite(corr) else 0.0}
