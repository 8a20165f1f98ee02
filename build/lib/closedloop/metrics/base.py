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
    model's class probabilities, ``target``: true class indices, both torch tensors; ``cfg``:
    params `metrics`, for options such as ``ece_bins``).

    ``on_labels(y, pred, k)`` computes the same value from predicted labels alone, vectorised
    over the leading axes of ``(..., n)`` integer arrays with labels in ``[0, k)``: that is what
    the paired bootstrap resamples. A metric that needs more than labels (ECE needs the
    probabilities) has none, and so is not compared champion-vs-candidate.
    """

    name: str
    higher_is_better: bool
    score: Callable[[Any, Any, dict], float]
    on_labels: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None

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
