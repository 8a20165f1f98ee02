"""The metrics of a binary classifier: ROC-AUC, PR-AUC, and precision, recall and F1 at the
decision threshold ``metrics.threshold``.

The positive class is the dataset's second class (``classes[1]``). Headline values come from
torchmetrics on the positive-class probability; the paired bootstrap uses numpy on the same
scores, batched over resamples: the AUCs from counts per distinct score (a rank-based
Mann-Whitney AUC and sklearn's average precision, no sort per resample), the
thresholded metrics from counts. All agree with scikit-learn (tests/unit/test_tasks.py).
"""

from __future__ import annotations

import numpy as np

from closedloop.metrics.base import Metric


# ------------------------------------------------ from scores (paired bootstrap, batched)
def _tie_groups(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per distinct score, in ascending score order, for each row of
    (..., n) arrays: two bincounts. Scores given as dense ranks (integers) need no sort at all:
    the bootstrap resamples those, ranked once (Metric.ranks_only)."""
    y, score = np.asarray(y), np.asarray(score)
    lead, n = score.shape[:-1], score.shape[-1]
    if np.issubdtype(score.dtype, np.integer):  # dense ranks already (see Metric.ranks_only)
        group, u = score.reshape(-1, n), int(score.max()) + 1 if score.size else 0
    else:
        values, group = np.unique(score, return_inverse=True)
        group, u = group.reshape(-1, n), len(values)
    m = group.shape[0]
    cell = (np.arange(m)[:, None] * u + group).ravel()
    positive = (y == 1).reshape(-1)
    pos = np.bincount(cell[positive], minlength=m * u).reshape(m, u)
    neg = np.bincount(cell[~positive], minlength=m * u).reshape(m, u)
    return pos.reshape(*lead, u), neg.reshape(*lead, u)


def roc_auc_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    """Mann-Whitney AUC along the last axis (ties count half); NaN without both classes."""
    pos, neg = _tie_groups(y, score)
    below = np.cumsum(neg, axis=-1) - neg  # negatives scored strictly lower
    n_pos, n_neg = pos.sum(axis=-1), neg.sum(axis=-1)
    u = (pos * (below + 0.5 * neg)).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def pr_auc_on_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    """Average precision (sklearn's step-wise sum over distinct score thresholds) along the
    last axis; NaN without a positive."""
    pos, neg = _tie_groups(y, score)
    pos, neg = pos[..., ::-1], neg[..., ::-1]  # highest score first: one threshold per group
    tp = np.cumsum(pos, axis=-1)
    said = tp + np.cumsum(neg, axis=-1)
    n_pos = tp[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(said > 0, tp / np.maximum(said, 1), 0.0)
        return np.where(n_pos > 0, (pos * precision).sum(axis=-1) / n_pos, np.nan)


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
    Metric("roc_auc", True, roc_auc, roc_auc_on_scores, ranks_only=True),  # area under ROC
    Metric("pr_auc", True, pr_auc, pr_auc_on_scores, ranks_only=True),  # average precision
    Metric("precision", True, precision, precision_on_scores),  # at metrics.threshold
    Metric("recall", True, recall, recall_on_scores),  # at metrics.threshold
    Metric("f1", True, f1, f1_on_scores),  # at metrics.threshold
)
