"""What a metric declares: its name, which way is better, and how to compute it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metric:
    """One metric of one task.

    ``score(outputs, target, cfg)`` is the headline value evaluate reports (``outputs``: the
    model's class probabilities, or its predicted values for regression; ``target``: true class
    indices, or true values; both torch tensors; ``cfg``: params `metrics`, for options such as
    ``ece_bins`` and ``threshold``).

    ``on_labels(y, pred, aux)`` computes the same value from what the paired bootstrap
    resamples, vectorised over the leading axes of ``(..., n)`` arrays: for multiclass the
    predicted labels (``aux`` = k, labels in ``[0, k)``), for binary the positive-class score
    (``aux`` = the decision threshold), for regression the predicted values (``aux`` unused).
    A metric that needs more (ECE needs every class's probability) has none, and so is not
    compared champion-vs-candidate.
    """

    name: str
    higher_is_better: bool
    score: Callable[[Any, Any, dict], float]
    on_labels: Callable[[np.ndarray, np.ndarray, Any], np.ndarray] | None = None
    # Depends on the order of the scores only (ROC-AUC, PR-AUC): the bootstrap may resample
    # their dense ranks (small integers) instead, and on_labels counts them without a sort.
    ranks_only: bool = False

    @property
    def comparable(self) -> bool:
        """Compared with the champion by a paired bootstrap CI (metrics.compare, gates)."""
        return self.on_labels is not None

    @property
    def label(self) -> str:
        """The name as reports print it: the direction is spelt out where it is not obvious."""
        return self.name if self.higher_is_better else f"{self.name} (lower is better)"

    def meets(self, value: float, limit: float) -> bool:
        """``value`` is at least as good as ``limit`` in this metric's direction."""
        return value >= limit if self.higher_is_better else value <= limit
