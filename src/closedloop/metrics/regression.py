"""The metrics of a regressor: MAE, RMSE and R².

Headline values come from torchmetrics on the predicted values; the paired bootstrap uses
numpy on the same values, batched over resamples. All agree with scikit-learn
(tests/unit/test_tasks.py).
"""

from __future__ import annotations

import numpy as np

from closedloop.metrics.base import Metric


# ------------------------------------------------ from values (paired bootstrap, batched)
def mae_on_values(y: np.ndarray, pred: np.ndarray, _: object = None) -> np.ndarray:
    return np.abs(np.asarray(y, dtype=float) - pred).mean(axis=-1)


def rmse_on_values(y: np.ndarray, pred: np.ndarray, _: object = None) -> np.ndarray:
    return np.sqrt(((np.asarray(y, dtype=float) - pred) ** 2).mean(axis=-1))


def r2_on_values(y: np.ndarray, pred: np.ndarray, _: object = None) -> np.ndarray:
    """1 - SS_res / SS_tot along the last axis; NaN when the target is constant."""
    y = np.asarray(y, dtype=float)
    ss_res = ((y - pred) ** 2).sum(axis=-1)
    ss_tot = ((y - y.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)


# ------------------------------------------------------ from values (torchmetrics, lazily)
def mae(pred, target, cfg: dict) -> float:
    from torchmetrics.regression import MeanAbsoluteError

    return float(MeanAbsoluteError()(pred.double(), target.double()))


def rmse(pred, target, cfg: dict) -> float:
    from torchmetrics.regression import MeanSquaredError

    return float(MeanSquaredError(squared=False)(pred.double(), target.double()))


def r2(pred, target, cfg: dict) -> float:
    from torchmetrics.regression import R2Score

    return float(R2Score()(pred.double(), target.double()))


METRICS = (
    Metric("mae", False, mae, mae_on_values),  # mean absolute error, in target units
    Metric("rmse", False, rmse, rmse_on_values),  # root mean squared error, in target units
    Metric("r2", True, r2, r2_on_values),  # coefficient of determination (1 is perfect)
)
