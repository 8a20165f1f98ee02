"""The metrics of a multiclass classifier: accuracy, macro-F1 and expected calibration error.

Headline values come from torchmetrics on the class probabilities; the paired bootstrap uses
numpy on predicted labels, batched over resamples (a thousand resamples of a few thousand rows
take milliseconds). Both agree with scikit-learn (tests/unit/test_stats.py).
"""

from __future__ import annotations

import numpy as np

from closedloop.metrics.base import Metric


# ------------------------------------------------------------ from labels (paired bootstrap)
def accuracy_on_labels(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return (y == pred).mean(axis=-1)


def macro_f1_on_labels(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Unweighted mean F1 over the labels in y or pred (sklearn's and torchmetrics' labels)."""
    lead = y.shape[:-1]
    y2, p2 = y.reshape(-1, y.shape[-1]), pred.reshape(-1, y.shape[-1])
    m = y2.shape[0]
    offset = np.arange(m)[:, None] * k  # one block of k bins per resample: one bincount for all
    cells = m * k
    tp = np.bincount((offset + y2)[y2 == p2], minlength=cells).reshape(m, k)
    support = np.bincount((offset + y2).ravel(), minlength=cells).reshape(m, k)
    predicted = np.bincount((offset + p2).ravel(), minlength=cells).reshape(m, k)
    denom = support + predicted
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=present)
    return (f1.sum(axis=1) / present.sum(axis=1)).reshape(lead)


# ------------------------------------------------- from probabilities (torchmetrics, lazily)
def accuracy(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import MulticlassAccuracy

    return float(MulticlassAccuracy(probs.shape[1], average="micro")(probs, target))


def macro_f1(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import MulticlassF1Score

    k = probs.shape[1]
    return float(MulticlassF1Score(k, average="macro", zero_division=0)(probs, target))


def ece(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import MulticlassCalibrationError

    k = probs.shape[1]
    return float(MulticlassCalibrationError(k, n_bins=cfg["ece_bins"], norm="l1")(probs, target))


METRICS = (
    Metric("accuracy", True, accuracy, accuracy_on_labels),  # share of correct predictions
    Metric("macro_f1", True, macro_f1, macro_f1_on_labels),  # unweighted mean F1 over classes
    Metric("ece", False, ece),  # expected calibration error (L1) over metrics.ece_bins bins
)
