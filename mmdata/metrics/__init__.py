"""Evaluation metrics, registered by task: ``METRICS[task](pred, truth) -> dict[str, float]``.

Every metric function takes numpy arrays and returns plain floats, so the result goes straight into
``metrics.json`` for ``dvc metrics diff``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmdata.metrics.classification import accuracy, classification_metrics
from mmdata.metrics.detection import detection_metrics
from mmdata.metrics.forecast import forecast_metrics
from mmdata.metrics.multilabel import multilabel_metrics
from mmdata.metrics.regression import mmsa_regression_metrics
from mmdata.metrics.segmentation import segmentation_metrics

MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]

METRICS: dict[str, MetricFn] = {
    "classification": classification_metrics,
    "multilabel": multilabel_metrics,
    "regression": mmsa_regression_metrics,
    "segmentation": segmentation_metrics,
    "forecast": forecast_metrics,
    "detection": detection_metrics,
}

#: The metric each task is summarised by (report plots, robustness curves), and whether higher is better.
HEADLINE: dict[str, tuple[str, bool]] = {
    "classification": ("accuracy", True), "regression": ("non0_acc2", True), "multilabel": ("f1_micro", True),
    "detection": ("map25", True), "segmentation": ("miou40", True), "forecast": ("mse", False),
}

__all__ = ["HEADLINE", "METRICS", "MetricFn", "accuracy", "classification_metrics", "mmsa_regression_metrics",
           "multilabel_metrics"]
