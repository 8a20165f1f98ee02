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
from closedloop.evaluation.statistics import metric_value, paired_delta_ci

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


def _entry(metric: str, y, cand, base, mcfg: dict) -> dict:
    d = paired_delta_ci(
        metric, y, cand, base, mcfg["confidence_level"], mcfg["n_resamples"], mcfg["bootstrap_seed"]
    )
    return {
        "candidate": d["candidate"],
        "baseline": d["champion"],
        "delta": d["delta"],
        "ci_low": d["ci_low"],
        "ci_high": d["ci_high"],
    }


def compare_baselines(
    frame: pd.DataFrame,
    classes: list[str],
    dummy_class: str,
    persistence: np.ndarray | None,
    mcfg: dict,
) -> dict:
    """Every baseline against the candidate on one split of reports/eval/ (``actual`` and
    ``predicted``); ``persistence`` from persistence_labels, or None without a time column."""
    actual, predicted = (frame[c].astype(str).to_numpy() for c in ("actual", "predicted"))
    n = len(actual)
    if n == 0:
        return {}
    extra = set() if persistence is None else set(persistence) - {""}
    seen = set(actual) | set(predicted) | extra | {dummy_class}
    categories = list(classes) + sorted(seen - set(classes))  # unseen labels still count
    y, cand = (
        pd.Categorical(v, categories=categories).codes.astype(np.int64) for v in (actual, predicted)
    )
    out = {}
    dummy = np.full(n, categories.index(dummy_class), dtype=np.int64)
    out["dummy"] = {
        "description": f"always the training split's majority class, {dummy_class}",
        "hindsight": False,
        "metrics": {m: _entry(m, y, cand, dummy, mcfg) for m in mcfg["compare"]},
    }
    best, chosen = {}, {}
    for m in mcfg["compare"]:
        declared = registry.get(m)
        values = {
            c: metric_value(m, y, np.full(n, i, dtype=np.int64)) for i, c in enumerate(categories)
        }
        pick = (max if declared.higher_is_better else min)(values, key=lambda c: values[c])
        chosen[m] = pick
        best[m] = {
            **_entry(m, y, cand, np.full(n, categories.index(pick), dtype=np.int64), mcfg),
            "constant": pick,
        }
    picks = sorted(set(chosen.values()))
    which = (
        f"always {picks[0]}"
        if len(picks) == 1
        else "always one class, per metric: " + ", ".join(f"{c} ({m})" for m, c in chosen.items())
    )
    out["best_constant"] = {
        "description": f"{which}: the best single class on these rows, in hindsight",
        "hindsight": True,
        "metrics": best,
    }
    if persistence is not None:
        # A first row with nothing before it repeats the dummy's class.
        labels = np.where(persistence == "", dummy_class, persistence)
        codes = pd.Categorical(labels, categories=categories).codes.astype(np.int64)
        out["persistence"] = {
            "description": "the label of the previous row in time (same as the day before)",
            "hindsight": False,
            "metrics": {m: _entry(m, y, cand, codes, mcfg) for m in mcfg["compare"]},
        }
    return out
