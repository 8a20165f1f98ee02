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
from closedloop.config.schema import compared_metrics
from closedloop.errors import DataError

DIGITS = 6
MAX_BATCH_CELLS = 2_000_000  # resamples x rows held in memory at once by the bootstrap
# scipy >= 1.15 takes `rng`; older releases only `random_state` (same meaning for a Generator).
_RNG_KW = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _r(x: float) -> float:
    return round(float(x), DIGITS)


def _on_labels(metric: str, y: np.ndarray, pred: np.ndarray, aux, task: str) -> np.ndarray:
    """The metric along the last axis of (..., n) arrays, as closedloop.metrics declares: labels
    (multiclass, ``aux`` = k), positive-class scores (binary, ``aux`` = threshold) or values."""
    declared = registry.get(metric, task)
    if not declared.comparable:
        raise DataError(f"{metric}: needs more than labels; it has no paired bootstrap")
    return declared.on_labels(y, pred, aux)


def _as_arrays(task: str, *arrays) -> tuple[np.ndarray, ...]:
    dtype = np.int64 if task == "multiclass" else np.float64
    return tuple(np.asarray(a, dtype=dtype) for a in arrays)


def _aux(task: str, threshold: float | None, *arrays: np.ndarray):
    """What the task's paired functions take beside y and pred: k, the threshold, or nothing."""
    if task == "multiclass":
        return int(max(a.max() for a in arrays)) + 1
    return threshold


def metric_value(
    metric: str,
    y: np.ndarray,
    pred: np.ndarray,
    task: str = registry.DEFAULT_TASK,
    threshold: float | None = None,
) -> float:
    """A comparable metric from what the bootstrap resamples (for multiclass: labels, over the
    union of y and pred's labels; binary: positive-class scores; regression: values)."""
    y, pred = _as_arrays(task, y, pred)
    if len(y) == 0:
        raise DataError(f"{metric}: no examples to score")
    return float(_on_labels(metric, y, pred, _aux(task, threshold, y, pred), task))


def paired_delta_ci(
    metric: str,
    y: np.ndarray,
    cand: np.ndarray,
    champ: np.ndarray,
    confidence: float,
    n_resamples: int,
    seed: int,
    task: str = registry.DEFAULT_TASK,
    threshold: float | None = None,
) -> dict:
    """Candidate, champion, delta and its percentile CI from a paired bootstrap over examples."""
    y, cand, champ = _as_arrays(task, y, cand, champ)
    candidate = metric_value(metric, y, cand, task, threshold)
    champion = metric_value(metric, y, champ, task, threshold)
    delta = candidate - champion
    low = high = delta
    if len(y) >= 2 and not np.array_equal(cand, champ):
        if registry.get(metric, task).ranks_only:  # the same value from ranks, ranked once
            cand, champ = (np.unique(a, return_inverse=True)[1] for a in (cand, champ))
        aux = _aux(task, threshold, y, cand, champ)

        def statistic(y, cand, champ, axis=-1):
            return _on_labels(metric, y, cand, aux, task) - _on_labels(metric, y, champ, aux, task)

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
        # Undefined on some resamples (an AUC on a resample without both classes): no CI, so
        # no gate can pass on it, rather than a degenerate interval that looks certain.
        finite = np.isfinite(ci.low) and np.isfinite(ci.high)
        low, high = (float(ci.low), float(ci.high)) if finite else (None, None)
    return {
        "candidate": _r(candidate),
        "champion": _r(champion),
        "delta": _r(delta),
        "ci_low": None if low is None else _r(low),
        "ci_high": None if high is None else _r(high),
    }


def mcnemar(y: np.ndarray, cand: np.ndarray, champ: np.ndarray) -> dict:
    """Exact McNemar: of the examples exactly one model gets right, is the split 50/50?"""
    y = np.asarray(y)
    cand_right, champ_right = np.asarray(cand) == y, np.asarray(champ) == y
    b = int((cand_right & ~champ_right).sum())
    c = int((~cand_right & champ_right).sum())
    p = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"b": b, "c": c, "p_value": float(p)}


def wilcoxon(y: np.ndarray, cand: np.ndarray, champ: np.ndarray) -> dict:
    """Paired Wilcoxon signed-rank test on absolute errors: does one regressor err less?"""
    y = np.asarray(y, dtype=float)
    e_cand, e_champ = np.abs(np.asarray(cand) - y), np.abs(np.asarray(champ) - y)
    diff = e_cand - e_champ
    if not np.any(diff != 0):
        return {"statistic": 0.0, "p_value": 1.0}
    res = stats.wilcoxon(e_cand, e_champ, zero_method="wilcox")
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue)}


def paired_test(task: str, y, cand, champ, threshold: float | None) -> tuple[str, dict]:
    """The task's test of champion vs candidate on the same rows: McNemar on right/wrong for
    classification (binary at the threshold), Wilcoxon on absolute errors for regression."""
    if task == "regression":
        return "wilcoxon", wilcoxon(y, cand, champ)
    if task == "binary":
        y = np.asarray(y).astype(bool)
        cand, champ = np.asarray(cand) >= threshold, np.asarray(champ) >= threshold
    return "mcnemar", mcnemar(y, cand, champ)


def holm(pvalues: dict[Hashable, float]) -> dict[Hashable, float]:
    """Holm-adjusted p-values: many slices tested at once inflate false alarms otherwise."""
    if not pvalues:
        return {}
    adjusted = multipletests(list(pvalues.values()), method="holm")[1]
    return {key: float(p) for key, p in zip(pvalues, adjusted, strict=True)}


def _compare(
    y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, metrics_cfg: dict, task: str
) -> tuple[dict, tuple[str, dict] | None]:
    """Per-metric entries and the task's paired test for one set of rows."""
    threshold = metrics_cfg.get("threshold")
    out = {}
    for metric in compared_metrics(metrics_cfg["compare"], task):
        if not np.isfinite(metric_value(metric, y, cand, task, threshold)):
            continue  # undefined on these rows (an AUC where only one class occurs): left out
        if champ is None:
            out[metric] = {
                "candidate": _r(metric_value(metric, y, cand, task, threshold)),
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
                task,
                threshold,
            )
    return out, None if champ is None else paired_test(task, y, cand, champ, threshold)


def _outputs(frame: pd.DataFrame, classes: list[str], baseline, task: str):
    """What the bootstrap resamples, from a per-example eval table: y, the candidate's, the
    champion's (None without one), and the dummy baseline's."""
    n = len(frame)
    has_champion = "champion_predicted" in frame.columns
    if task == "regression":
        y = frame["actual"].to_numpy(dtype=float)
        cand = frame["predicted"].to_numpy(dtype=float)
        champ = frame["champion_predicted"].to_numpy(dtype=float) if has_champion else None
        return y, cand, champ, np.full(n, float(baseline))
    if task == "binary":
        positive = classes[1]
        y = (frame["actual"].astype(str).to_numpy() == positive).astype(float)
        cand = frame[f"p_{positive}"].to_numpy(dtype=float)
        champ = frame["champion_score"].to_numpy(dtype=float) if has_champion else None
        return y, cand, champ, np.full(n, 1.0 if str(baseline) == positive else 0.0)
    label_cols = ["actual", "predicted"] + (["champion_predicted"] if has_champion else [])
    labels = {c: frame[c].astype(str).to_numpy() for c in label_cols}
    seen = set().union(*(set(v) for v in labels.values()), {str(baseline)})
    categories = list(classes) + sorted(seen - set(classes))  # unseen labels still count
    codes = {c: pd.Categorical(v, categories=categories).codes for c, v in labels.items()}
    y, cand = codes["actual"].astype(np.int64), codes["predicted"].astype(np.int64)
    champ = codes["champion_predicted"].astype(np.int64) if has_champion else None
    return y, cand, champ, np.full(n, categories.index(str(baseline)), dtype=np.int64)


def compare_split(
    frame: pd.DataFrame,
    classes: list[str],
    slice_columns: list[str],
    metrics_cfg: dict,
    baseline,
    task: str = registry.DEFAULT_TASK,
) -> dict:
    """Candidate vs champion (when there is one) and vs the task's dummy (``baseline``: the
    most frequent training class, or the mean training target) on one split of reports/eval/,
    overall and per slice value, with Holm across slice values."""
    missing = [c for c in ("actual", "predicted", *slice_columns) if c not in frame.columns]
    if missing:
        raise DataError(f"eval frame: column(s) {missing} missing")
    has_champion = "champion_predicted" in frame.columns
    n = len(frame)
    test_key = "wilcoxon" if task == "regression" else "mcnemar"
    result = {
        "n": n,
        "has_champion": has_champion,
        "overall": {},
        "baseline": {},
        "mcnemar": None,  # classification's test; regression's is wilcoxon
        "slices": {},
    }
    if n == 0:
        return result
    y, cand, champ, dummy = _outputs(frame, classes, baseline, task)
    result["overall"], test = _compare(y, cand, champ, metrics_cfg, task)
    result[test_key] = None if test is None else test[1]
    threshold = metrics_cfg.get("threshold")
    result["baseline"] = {
        m: _r(metric_value(m, y, dummy, task, threshold))
        for m in compared_metrics(metrics_cfg["compare"], task)
    }
    pvalues = {}
    for column in slice_columns:
        name = column.removeprefix("slice_")
        values = frame[column].astype(str).to_numpy()
        result["slices"][name] = {}
        for value in sorted(set(values)):
            rows = values == value
            part, test = _compare(
                y[rows], cand[rows], None if champ is None else champ[rows], metrics_cfg, task
            )
            result["slices"][name][value] = {
                "n": int(rows.sum()),
                **part,
                "mcnemar": None,
                test_key: None if test is None else test[1],
                "p_holm": None,
            }
            if test is not None:
                pvalues[(name, value)] = test[1]["p_value"]
    for (name, value), p in holm(pvalues).items():
        result["slices"][name][value]["p_holm"] = p
    return result
