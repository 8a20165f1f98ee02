"""Paired statistics for champion vs candidate on the same examples.

A point estimate hides noise: the gate judges a paired bootstrap CI on the delta
(scipy.stats.bootstrap), McNemar's exact test on disagreements (scipy.stats.binomtest) and,
across slices, Holm-corrected p-values (statsmodels). The metrics are closedloop.metrics'
label functions, batched over resamples, so a thousand resamples take milliseconds.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from closedloop import metrics as registry
from closedloop.errors import DataError

DIGITS = 6
MAX_BATCH_CELLS = 2_000_000  # resamples x rows held in memory at once by the bootstrap
# scipy >= 1.15 takes `rng`; older releases only `random_state` (same meaning for a Generator).
_RNG_KW = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _r(x: float) -> float:
    return round(float(x), DIGITS)


def _on_labels(metric: str, y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """The metric along the last axis of (..., n) label arrays, as closedloop.metrics declares."""
    declared = registry.get(metric)
    if not declared.comparable:
        raise DataError(f"{metric}: needs more than labels; it has no paired bootstrap")
    return declared.on_labels(y, pred, k)


def metric_value(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """A comparable metric from labels (for multiclass: the union of y and pred's labels)."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if len(y) == 0:
        raise DataError(f"{metric}: no examples to score")
    k = int(max(y.max(), pred.max())) + 1
    return float(_on_labels(metric, y, pred, k))


def paired_delta_ci(
    metric: str,
    y: np.ndarray,
    cand: np.ndarray,
    champ: np.ndarray,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> dict:
    """Candidate, champion, delta and its percentile CI from a paired bootstrap over examples."""
    y, cand, champ = (np.asarray(a, dtype=np.int64) for a in (y, cand, champ))
    candidate, champion = metric_value(metric, y, cand), metric_value(metric, y, champ)
    delta = candidate - champion
    low = high = delta
    if len(y) >= 2 and not np.array_equal(cand, champ):
        k = int(max(y.max(), cand.max(), champ.max())) + 1

        def statistic(y, cand, champ, axis=-1):
            return _on_labels(metric, y, cand, k) - _on_labels(metric, y, champ, k)

        res = stats.bootstrap(
            (y, cand, champ),
            statistic,
            paired=True,
            vectorized=True,
            method="percentile",
            confidence_level=confidence,
            n_resamples=n_resamples,
            batch=max(1, MAX_BATCH_CELLS // len(y)),
            **{_RNG_KW: np.random.default_rng(seed)},
        )
        ci = res.confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            low, high = float(ci.low), float(ci.high)
    return {
        "candidate": _r(candidate),
        "champion": _r(champion),
        "delta": _r(delta),
        "ci_low": _r(low),
        "ci_high": _r(high),
    }


def mcnemar(y: np.ndarray, cand: np.ndarray, champ: np.ndarray) -> dict:
    """Exact McNemar: of the examples exactly one model gets right, is the split 50/50?"""
    y = np.asarray(y)
    cand_right, champ_right = np.asarray(cand) == y, np.asarray(champ) == y
    b = int((cand_right & ~champ_right).sum())
    c = int((~cand_right & champ_right).sum())
    p = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"b": b, "c": c, "p_value": float(p)}


def holm(pvalues: dict[Hashable, float]) -> dict[Hashable, float]:
    """Holm-adjusted p-values: many slices tested at once inflate false alarms otherwise."""
    if not pvalues:
        return {}
    adjusted = multipletests(list(pvalues.values()), method="holm")[1]
    return {key: float(p) for key, p in zip(pvalues, adjusted, strict=True)}


def _compare(
    y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, metrics_cfg: dict
) -> tuple[dict, dict | None]:
    """Per-metric entries and the McNemar test for one set of rows."""
    out = {}
    for metric in metrics_cfg["compare"]:
        if champ is None:
            out[metric] = {
                "candidate": _r(metric_value(metric, y, cand)),
                "champion": None,
                "delta": None,
                "ci_low": None,
                "ci_high": None,
            }
        else:
            out[metric] = paired_delta_ci(
                metric,
                y,
                cand,
                champ,
                metrics_cfg["confidence_level"],
                metrics_cfg["n_resamples"],
                metrics_cfg["bootstrap_seed"],
            )
    return out, None if champ is None else mcnemar(y, cand, champ)


def compare_split(
    frame: pd.DataFrame,
    classes: list[str],
    slice_columns: list[str],
    metrics_cfg: dict,
    baseline_class: str,
) -> dict:
    """Candidate vs champion (when there is one) and vs a most-frequent-class dummy on one
    split of reports/eval/, overall and per slice value, with Holm across slice values."""
    missing = [c for c in ("actual", "predicted", *slice_columns) if c not in frame.columns]
    if missing:
        raise DataError(f"eval frame: column(s) {missing} missing")
    has_champion = "champion_predicted" in frame.columns
    label_cols = ["actual", "predicted"] + (["champion_predicted"] if has_champion else [])
    labels = {c: frame[c].astype(str).to_numpy() for c in label_cols}
    seen = set().union(*(set(v) for v in labels.values()), {str(baseline_class)})
    categories = list(classes) + sorted(seen - set(classes))  # unseen labels still count
    codes = {c: pd.Categorical(v, categories=categories).codes for c, v in labels.items()}
    y, cand = codes["actual"].astype(np.int64), codes["predicted"].astype(np.int64)
    champ = codes["champion_predicted"].astype(np.int64) if has_champion else None
    n = len(y)
    result = {
        "n": n,
        "has_champion": has_champion,
        "overall": {},
        "baseline": {},
        "mcnemar": None,
        "slices": {},
    }
    if n == 0:
        return result
    result["overall"], result["mcnemar"] = _compare(y, cand, champ, metrics_cfg)
    dummy = np.full(n, categories.index(str(baseline_class)), dtype=np.int64)
    result["baseline"] = {m: _r(metric_value(m, y, dummy)) for m in metrics_cfg["compare"]}
    pvalues = {}
    for column in slice_columns:
        name = column.removeprefix("slice_")
        values = frame[column].astype(str).to_numpy()
        result["slices"][name] = {}
        for value in sorted(set(values)):
            rows = values == value
            part, test = _compare(
                y[rows], cand[rows], None if champ is None else champ[rows], metrics_cfg
            )
            result["slices"][name][value] = {
                "n": int(rows.sum()),
                **part,
                "mcnemar": test,
                "p_holm": None,
            }
            if test is not None:
                pvalues[(name, value)] = test["p_value"]
    for (name, value), p in holm(pvalues).items():
        result["slices"][name][value]["p_holm"] = p
    return result
