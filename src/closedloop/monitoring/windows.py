"""The numbers of reports/monitor.json: traffic, feedback, accuracy and drift per window.

Windows are UTC days, weeks (from Monday) or months of the time each prediction was answered
(``ts``). A window with fewer than ``monitor.min_requests`` predictions is marked too small;
realised accuracy needs ``monitor.min_labels`` labels; drift needs ``monitor.drift.min_rows``
rows. Marked windows keep their numbers: the page shades them rather than hiding them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from statsmodels.stats.proportion import proportion_confint

from closedloop.monitoring.estimate import Calibration
from closedloop.rollout.records import has_rollout, probabilities

DIGITS = 6
ASSUMPTION = (
    "The label-free estimate assumes no concept drift: P(label | features) in production is "
    "what it was on the eval set. Inputs may shift; the relation between inputs and labels may "
    "not. Where labels have arrived, the gap between the estimate and the realised accuracy "
    "shows whether the assumption holds."
)
REGRESSION_NOTE = (
    "The records carry no class probabilities (a regression model, or a server that does not "
    "log them), so there is no label-free accuracy estimate: the page shows the prediction "
    "distribution, feedback and drift instead"
)


def _r(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, DIGITS) if np.isfinite(x) else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowStats(_Model):
    label: str
    start: str
    end: str
    requests: int
    too_small: bool
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    error_rate: float | None
    prediction_mix: dict[str, float]
    labelled: int
    feedback_rate: float | None
    feedback_delay_hours: float | None  # median time from answer to feedback
    labels_too_few: bool
    realised_accuracy: float | None
    realised_low: float | None
    realised_high: float | None
    estimated_accuracy: float | None
    raw_confidence: float | None  # mean top probability before calibration
    gap: float | None  # estimated - realised
    drift_share: float | None
    drift_rows: int
    drifted_columns: list[str]
    arms: dict[str, int]


class EstimateInfo(_Model):
    available: bool
    method: str
    source: str | None
    eval_examples: int
    ece: float | None
    max_ece: float
    reliable: bool
    note: str


class MonitorReport(_Model):
    window: Literal["day", "week", "month"]
    source: str
    records: dict[str, int]
    assumption: str
    estimate: EstimateInfo
    classes: list[str]
    has_errors: bool
    has_rollout: bool
    drift_reference: str | None
    min_requests: int
    min_labels: int
    confidence_level: float
    windows: list[WindowStats]
    totals: dict[str, float | int | None]
    calibration_curve: list[dict[str, float]]
    alerts: list[dict] = []


def window_start(ts: pd.Series, window: str) -> pd.Series:
    """The UTC start of each timestamp's day, week (Monday) or month, tz-naive."""
    naive = pd.to_datetime(ts, utc=True).dt.tz_localize(None)
    if window == "day":
        return naive.dt.floor("D")
    if window == "week":
        day = naive.dt.floor("D")
        return day - pd.to_timedelta(day.dt.weekday, unit="D")
    return naive.dt.to_period("M").dt.start_time


def _label(start: pd.Timestamp, window: str) -> str:
    if window == "day":
        return start.strftime("%Y-%m-%d")
    if window == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


def _end(start: pd.Timestamp, window: str) -> pd.Timestamp:
    if window == "day":
        return start + pd.Timedelta(days=1)
    if window == "week":
        return start + pd.Timedelta(days=7)
    return start + pd.offsets.MonthBegin(1)


def compute(
    frame: pd.DataFrame,
    cfg: dict,
    calibration: Calibration,
    drift_fn=None,
    source: str = "data/feedback",
    counts: dict | None = None,
    calibration_curve: list[dict] | None = None,
    drift_reference: str | None = None,
) -> MonitorReport:
    """Every window's numbers for the records ``frame`` (closedloop.rollout.records).

    ``drift_fn(current_rows) -> summary`` measures one window's drift (None: no drift);
    ``cfg`` is params ``monitor``.
    """
    window = cfg["window"]
    df = frame.reset_index(drop=True)
    probs, classes = probabilities(df)
    has_probs = probs.shape[1] > 0 and np.isfinite(probs).any()
    confidence = probs.max(axis=1) if has_probs else np.full(len(df), np.nan)
    calibrated = calibration(confidence) if has_probs else confidence
    if "prediction" in df.columns:
        classes = sorted(set(classes) | {str(p) for p in df["prediction"].dropna()})
    has_errors = "error" in df.columns
    rollout = has_rollout(df)
    level = cfg["confidence_level"]

    windows: list[WindowStats] = []
    if len(df):
        starts = window_start(df["ts"], window)
        for start in sorted(starts.unique()):
            rows = np.flatnonzero((starts == start).to_numpy())
            part = df.iloc[rows]
            windows.append(
                _window(
                    part, pd.Timestamp(start), cfg, confidence[rows], calibrated[rows],
                    classes, has_errors, rollout, drift_fn, level,
                )
            )  # fmt: skip
    labelled = sum(w.labelled for w in windows)
    correct = sum(round((w.realised_accuracy or 0) * w.labelled) for w in windows)
    note = (
        REGRESSION_NOTE
        if not has_probs and len(df)
        else (calibration.why_unreliable() or "the eval set's calibration is within its limit")
    )
    estimate = EstimateInfo(
        available=bool(has_probs),
        method=calibration.method,
        source=calibration.source,
        eval_examples=calibration.n,
        ece=_r(calibration.ece),
        max_ece=calibration.max_ece,
        reliable=bool(has_probs) and calibration.reliable,
        note=note,
    )
    totals = {
        "requests": len(df),
        "windows": len(windows),
        "labelled": labelled,
        "realised_accuracy": _r(correct / labelled) if labelled else None,
        "estimated_accuracy": _r(np.nanmean(calibrated)) if has_probs else None,
    }
    return MonitorReport(
        window=window,
        source=source,
        records=counts or {"rows_in": len(df), "kept": len(df)},
        assumption=ASSUMPTION,
        estimate=estimate,
        classes=classes,
        has_errors=has_errors,
        has_rollout=rollout,
        drift_reference=drift_reference,
        min_requests=cfg["min_requests"],
        min_labels=cfg["min_labels"],
        confidence_level=level,
        windows=windows,
        totals=totals,
        calibration_curve=calibration_curve or [],
    )


def _window(
    part: pd.DataFrame,
    start: pd.Timestamp,
    cfg: dict,
    confidence: np.ndarray,
    calibrated: np.ndarray,
    classes: list[str],
    has_errors: bool,
    rollout: bool,
    drift_fn,
    level: float,
) -> WindowStats:
    n = len(part)
    latency = (
        pd.to_numeric(part.get("latency_ms"), errors="coerce") if "latency_ms" in part else None
    )
    lat = latency.dropna().to_numpy() if latency is not None else np.array([])
    labelled_mask = part["label"].notna() if "label" in part else pd.Series(False, index=part.index)
    n_lab = int(labelled_mask.sum())
    realised = low = high = None
    if n_lab:
        right = int(
            (
                part.loc[labelled_mask, "label"].astype(str)
                == part.loc[labelled_mask, "prediction"].astype(str)
            ).sum()
        )
        realised = right / n_lab
        low, high = proportion_confint(right, n_lab, alpha=1 - level, method="wilson")
    delay = None
    if n_lab and "label_ts" in part:
        hours = (
            pd.to_datetime(part.loc[labelled_mask, "label_ts"], utc=True)
            - pd.to_datetime(part.loc[labelled_mask, "ts"], utc=True)
        ) / pd.Timedelta(hours=1)
        delay = float(hours.median()) if hours.notna().any() else None
    mix = {}
    if "prediction" in part and n:
        counts = part["prediction"].dropna().astype(str).value_counts()
        answered = int(counts.sum())
        mix = {c: _r(counts.get(c, 0) / answered) for c in classes} if answered else {}
    estimated = float(np.nanmean(calibrated)) if np.isfinite(calibrated).any() else None
    raw = float(np.nanmean(confidence)) if np.isfinite(confidence).any() else None
    drift_share, drifted, drift_rows = None, [], 0
    if drift_fn is not None and n >= cfg["drift"]["min_rows"]:
        summary = drift_fn(part, start)
        if summary is not None:
            drift_share = summary["drifted_share"]
            drifted = list(summary["top_drifted"])
            drift_rows = int(summary["current"]["rows"])
    arms = {}
    if rollout:
        arms = {
            k: int(v)
            for k, v in part["arm"].dropna().astype(str).value_counts().sort_index().items()
        }
    gap = None if estimated is None or realised is None else estimated - realised
    return WindowStats(
        label=_label(start, cfg["window"]),
        start=start.isoformat(),
        end=_end(start, cfg["window"]).isoformat(),
        requests=n,
        too_small=n < cfg["min_requests"],
        latency_p50_ms=_r(np.quantile(lat, 0.5)) if len(lat) else None,
        latency_p99_ms=_r(np.quantile(lat, 0.99)) if len(lat) else None,
        error_rate=_r(part["error"].notna().mean()) if has_errors and n else None,
        prediction_mix=mix,
        labelled=n_lab,
        feedback_rate=_r(n_lab / n) if n else None,
        feedback_delay_hours=_r(delay),
        labels_too_few=n_lab < cfg["min_labels"],
        realised_accuracy=_r(realised),
        realised_low=_r(low),
        realised_high=_r(high),
        estimated_accuracy=_r(estimated),
        raw_confidence=_r(raw),
        gap=_r(gap),
        drift_share=_r(drift_share),
        drift_rows=drift_rows,
        drifted_columns=drifted,
        arms=arms,
    )
