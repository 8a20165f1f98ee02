"""Accuracy before labels arrive: confidence-based performance estimation.

In the spirit of NannyML's CBPE: when a classifier's probabilities are calibrated, the chance
that a prediction is right is its top probability, so the expected accuracy of a window is
the mean top probability of its predictions, labels or not. The probabilities are first
calibrated on the frozen eval set (reports/eval/val.csv: the top probability against whether
the prediction was right, through scikit-learn's isotonic regression, NannyML's default).

The assumption, stated on the page: no concept drift. P(y | x) in production is what it was
on the eval set; the inputs may move (covariate shift), the relation may not. Label shift and
relabelling break it, and the gap to the realised accuracy, once labels arrive, shows it. The
estimate is also flagged unreliable when the eval set's ECE (reports/metrics.json) is above
``monitor.estimate.max_ece``: an overconfident model's probabilities say little.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop.errors import DataError
from closedloop.io import read_json


@dataclass
class Calibration:
    """Maps a top probability to the chance the prediction is right."""

    method: str  # "isotonic" or "none"
    source: str | None  # where it was fitted, for the page
    n: int  # eval examples it was fitted on
    ece: float | None  # eval-set ECE before calibration (reports/metrics.json)
    max_ece: float
    model: object | None = None

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        confidence = np.asarray(confidence, dtype=float)
        if self.model is None:
            return confidence
        out = np.full(confidence.shape, np.nan)
        ok = np.isfinite(confidence)
        out[ok] = self.model.predict(confidence[ok])
        return out

    @property
    def reliable(self) -> bool:
        return self.ece is not None and self.ece <= self.max_ece

    def why_unreliable(self) -> str | None:
        if self.ece is None:
            return "the eval set's ECE is unknown (no reports/metrics.json): calibration cannot be checked"
        if self.ece > self.max_ece:
            return (
                f"the eval set's ECE is {self.ece:.3f}, above the limit of {self.max_ece:g}: "
                "the model's probabilities are poorly calibrated"
            )
        return None


def top_probability(eval_frame: pd.DataFrame) -> np.ndarray:
    columns = [c for c in eval_frame.columns if c.startswith("p_")]
    if not columns:
        raise DataError("eval outputs: no p_<class> columns (is this a classifier?)")
    return eval_frame[columns].to_numpy(dtype=float).max(axis=1)


def fit(cfg: dict, eval_csv: Path | None, metrics_json: Path | None) -> Calibration:
    """The calibration ``monitor.estimate`` asks for, fitted on ``eval_csv`` when it exists."""
    ece = None
    if metrics_json is not None and Path(metrics_json).exists():
        ece = (read_json(metrics_json).get("val") or {}).get("ece")
    base = dict(ece=ece, max_ece=cfg["max_ece"])
    if cfg["calibration"] == "none" or eval_csv is None or not Path(eval_csv).exists():
        return Calibration(method="none", source=None, n=0, **base)
    from sklearn.isotonic import IsotonicRegression

    frame = pd.read_csv(eval_csv)
    missing = [c for c in ("actual", "predicted") if c not in frame.columns]
    if missing:
        raise DataError(f"{eval_csv}: column(s) {missing} missing")
    confidence = top_probability(frame)
    right = (frame["actual"].astype(str) == frame["predicted"].astype(str)).to_numpy(float)
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, right)
    return Calibration(method="isotonic", source=str(eval_csv), n=len(frame), model=model, **base)
