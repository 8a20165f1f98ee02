"""The metrics of a binary classifier: ROC-AUC, PR-AUC, and precision, recall and F1 at the
decision threshold ``metrics.threshold``.

The positive class is the dataset's second class (``classes[1]``). Headline values come from
torchmetrics on the positive-class probability; the paired bootstrap uses numpy on the same
scores, batched over resamples: the AUCs by ranks (no Python loop over resamples), the
thresholded metrics from counts. All agree with scikit-learn (tests/unit/test_tasks.py).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from closedloop.metrics.base import Metric


# ------------------------------------------------ from scores (paired bootstrap, batched)
def roc_auc_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    """Mann-Whitney AUC along the last axis (ties count half); NaN without both classes."""
    y = np.asarray(y) == 1
    ranks = rankdata(score, axis=-1)  # average ranks: ties count half, as sklearn's
    n_pos = y.sum(axis=-1)
    n_neg = y.shape[-1] - n_pos
    u = np.where(y, ranks, 0).sum(axis=-1) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def pr_auc_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    """Average precision (sklearn's step-wise sum over distinct score thresholds) along the
    last axis; NaN without a positive."""
    y, score = np.asarray(y), np.asarray(score, dtype=float)
    order = np.argsort(-score, axis=-1, kind="stable")
    s = np.take_along_axis(score, order, axis=-1)
    hit = np.take_along_axis(y == 1, order, axis=-1)
    tp = np.cumsum(hit, axis=-1)
    rank = np.arange(1, y.shape[-1] + 1)
    # A threshold ends where the next score differs (tied scores form one step).
    ends = np.ones(s.shape, dtype=bool)
    ends[..., :-1] = s[..., 1:] != s[..., :-1]
    tp_at_ends = np.maximum.accumulate(np.where(ends, tp, 0), axis=-1)
    previous = np.concatenate([np.zeros((*tp.shape[:-1], 1)), tp_at_ends[..., :-1]], axis=-1)
    gain = np.where(ends, (tp - previous) * tp / rank, 0.0).sum(axis=-1)
    n_pos = tp[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_pos > 0, gain / n_pos, np.nan)


def _counts(y: np.ndarray, score: np.ndarray, threshold: float):
    y, said = np.asarray(y) == 1, np.asarray(score) >= threshold
    tp = (y & said).sum(axis=-1)
    return tp, said.sum(axis=-1), y.sum(axis=-1)


def _ratio(a, b) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.shape(a)), where=np.asarray(b) > 0)


def precision_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    tp, predicted, _ = _counts(y, score, threshold)
    return _ratio(tp, predicted)


def recall_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    tp, _, actual = _counts(y, score, threshold)
    return _ratio(tp, actual)


def f1_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    tp, predicted, actual = _counts(y, score, threshold)
    return _ratio(2 * tp, predicted + actual)


# ------------------------------------------------- from probabilities (torchmetrics, lazily)
def _positive(probs):
    return probs[:, 1]


def roc_auc(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import BinaryAUROC

    return float(BinaryAUROC()(_positive(probs), target))


def pr_auc(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import BinaryAveragePrecision

    return float(BinaryAveragePrecision()(_positive(probs), target))


def precision(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import BinaryPrecision

    return float(BinaryPrecision(threshold=cfg["threshold"])(_positive(probs), target))


def recall(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import BinaryRecall

    return float(BinaryRecall(threshold=cfg["threshold"])(_positive(probs), target))


def f1(probs, target, cfg: dict) -> float:
    from torchmetrics.classification import BinaryF1Score

    return float(BinaryF1Score(threshold=cfg["threshold"])(_positive(probs), target))


METRICS = (
    Metric("roc_auc", True, roc_auc, roc_auc_on_scores),  # area under the ROC curve
    Metric("pr_auc", True, pr_auc, pr_auc_on_scores),  # average precision (area under PR)
    Metric("precision", True, precision, precision_on_scores),  # at metrics.threshold
    Metric("recall", True, recall, recall_on_scores),  # at metrics.threshold
    Metric("f1", True, f1, f1_on_scores),  # at metrics.threshold
)
