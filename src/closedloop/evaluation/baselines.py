"""Baselines a candidate must beat to be worth shipping, scored on the same rows.

- ``dummy``: always the training split's majority class (what a model knows without features).
- ``best_constant``: the best single class on the judged rows themselves, per metric. It is
  hindsight (nobody knows it in advance), so it is an upper bound for any constant guess: a
  model that loses to it predicts worse than a fixed answer would have.
- ``persistence``: the label of the previous row in time (for daily data, "same as
  yesterday"), where the dataset has a time column.

Each is compared with the candidate like the champion is: Δ = candidate - baseline with a
paired bootstrap CI (closedloop.evaluation.statistics), for every metric ``metrics.compare``
names (closedloop.metrics), so the gate can require beating one on its CI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop import metrics as registry
from closedloop.config.schema import compared_metrics
from closedloop.evaluation.statistics import _outputs, metric_value, paired_delta_ci

NAMES = ("dummy", "best_constant", "persistence")  # conf/gates/: beat_baseline.baselines


def persistence_labels(
    split: pd.DataFrame, history: list[pd.DataFrame], target: str, time_column: str
) -> np.ndarray:
    """For each row of ``split``, the label of the row just before it in time, looking back
    into ``history`` (the earlier splits) for the first one; empty string where none is."""
    frames = [f[[time_column, target]].assign(_split=i) for i, f in enumerate(history)]
    mine = split[[time_column, target]].assign(_split=len(history), _row=np.arange(len(split)))
    every = pd.concat([*frames, mine], ignore_index=True)
    every[time_column] = pd.to_datetime(every[time_column])
    every = every.sort_values([time_column, "_split"], kind="stable")
    previous = every[target].astype(str).shift(1).fillna("")
    ours = every["_split"].to_numpy() == len(history)
    out = np.empty(len(split), dtype=object)
    out[every.loc[ours, "_row"].astype(int).to_numpy()] = previous[ours].to_numpy()
    return out.astype(str)


def _entry(metric: str, y, cand, base, mcfg: dict, task: str) -> dict:
    d = paired_delta_ci(
        metric,
        y,
        cand,
        base,
        mcfg["confidence_level"],
        mcfg["n_resamples"],
        mcfg["bootstrap_seed"],
        task,
        mcfg.get("threshold"),
    )
    return {
        "candidate": d["candidate"],
        "baseline": d["champion"],
        "delta": d["delta"],
        "ci_low": d["ci_low"],
        "ci_high": d["ci_high"],
    }


def _encoded(frame, classes, dummy, persistence, task):
    """y, the candidate's outputs, the dummy's, the constants to try {name: value} and the
    persistence outputs, all as the task's bootstrap resamples them (statistics._outputs)."""
    n = len(frame)
    if task == "regression":
        y, cand, _, dummy_out = _outputs(frame, classes, dummy, task)
        constants = {
            f"{np.mean(y):.4g} (the mean)": np.mean(y),
            f"{np.median(y):.4g} (the median)": np.median(y),
        }
        prev = None
        if persistence is not None:
            prev = np.array([float(v) if v != "" else float(dummy) for v in persistence])
        return y, cand, dummy_out, {k: np.full(n, v) for k, v in constants.items()}, prev
    if task == "binary":
        y, cand, _, dummy_out = _outputs(frame, classes, dummy, task)
        constants = {c: np.full(n, float(i == 1)) for i, c in enumerate(classes[:2])}
        prev = None
        if persistence is not None:
            labels = np.where(persistence == "", str(dummy), persistence)
            prev = (labels == classes[1]).astype(float)
        return y, cand, dummy_out, constants, prev
    actual, predicted = (frame[c].astype(str).to_numpy() for c in ("actual", "predicted"))
    extra = set() if persistence is None else set(persistence) - {""}
    seen = set(actual) | set(predicted) | extra | {str(dummy)}
    categories = list(classes) + sorted(seen - set(classes))  # unseen labels still count
    code = lambda v: pd.Categorical(v, categories=categories).codes.astype(np.int64)  # noqa: E731
    constants = {c: np.full(n, i, dtype=np.int64) for i, c in enumerate(categories)}
    prev = None
    if persistence is not None:  # a first row with nothing before it repeats the dummy's class
        prev = code(np.where(persistence == "", str(dummy), persistence))
    return code(actual), code(predicted), constants[str(dummy)], constants, prev


def compare_baselines(
    frame: pd.DataFrame,
    classes: list[str],
    dummy,
    persistence: np.ndarray | None,
    mcfg: dict,
    task: str = registry.DEFAULT_TASK,
) -> dict:
    """Every baseline against the candidate on one split of reports/eval/; ``dummy`` is the
    task's (the majority training class, or the mean training target), ``persistence`` from
    persistence_labels, or None without a time column."""
    if len(frame) == 0:
        return {}
    y, cand, dummy_out, constants, prev = _encoded(frame, classes, dummy, persistence, task)
    compared = compared_metrics(mcfg["compare"], task)
    what = (
        f"the mean training target, {float(dummy):.4g}"
        if task == "regression"
        else (f"always the training split's majority class, {dummy}")
    )
    out = {
        "dummy": {
            "description": what,
            "hindsight": False,
            "metrics": {m: _entry(m, y, cand, dummy_out, mcfg, task) for m in compared},
        }
    }
    best, chosen = {}, {}
    threshold = mcfg.get("threshold")
    for m in compared:
        declared = registry.get(m, task)
        values = {c: metric_value(m, y, v, task, threshold) for c, v in constants.items()}
        finite = {c: v for c, v in values.items() if np.isfinite(v)} or values
        pick = (max if declared.higher_is_better else min)(finite, key=lambda c: finite[c])
        chosen[m] = pick
        best[m] = {**_entry(m, y, cand, constants[pick], mcfg, task), "constant": str(pick)}
    kind = "value" if task == "regression" else "class"
    picks = sorted(set(chosen.values()))
    which = (
        f"always {picks[0]}"
        if len(picks) == 1
        else "always one answer, per metric: " + ", ".join(f"{c} ({m})" for m, c in chosen.items())
    )
    out["best_constant"] = {
        "description": f"{which}: the best single {kind} on these rows, in hindsight",
        "hindsight": True,
        "metrics": best,
    }
    if prev is not None:
        out["persistence"] = {
            "description": "the label of the previous row in time (same as the day before)",
            "hindsight": False,
            "metrics": {m: _entry(m, y, cand, prev, mcfg, task) for m in compared},
        }
    return out
