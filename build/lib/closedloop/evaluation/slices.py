"""Slices: the sub-populations that matter, as declared in conf/slices/.

Each slice kind maps a row to a label (a season, a class, a feature range). evaluate scores
every label separately for candidate and champion, and the gate can fail on one of them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from closedloop.errors import DataError

SEASONS = {
    12: "winter",
    1: "winter",
    2: "winter",
    3: "spring",
    4: "spring",
    5: "spring",
    6: "summer",
    7: "summer",
    8: "summer",
    9: "autumn",
    10: "autumn",
    11: "autumn",
}


def _range_labels(values: pd.Series, bins: list[float]) -> pd.Series:
    edges = np.asarray(bins, dtype=float)
    idx = np.searchsorted(edges, values.to_numpy(dtype=float), side="right") - 1
    labels = np.array(
        [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(edges)] + ["out of range"]
    )
    idx = np.where((idx < 0) | (idx >= len(edges) - 1), len(edges) - 1, idx)
    return pd.Series(labels[idx], index=values.index)


def assign(df: pd.DataFrame, spec: dict, *, target: str, time_column: str | None) -> pd.Series:
    """The slice label of every row of ``df`` for one slice spec."""
    where = f"slices: {spec['name']} (by {spec['by']})"
    if spec["by"] in ("month", "season"):
        if not time_column:
            raise DataError(f"{where}: the dataset has no time column")
        months = pd.to_datetime(df[time_column]).dt.month
        if spec["by"] == "season":
            return months.map(SEASONS)
        return months.map(lambda m: f"{m:02d}")
    if spec["by"] == "class":
        return df[target].astype(str)
    column = spec["column"]
    if column not in df.columns:
        raise DataError(f"{where}: column {column!r} is not in the snapshot")
    if spec["by"] == "range":
        return _range_labels(df[column], spec["bins"])
    return df[column].astype(str)


def slice_columns(
    df: pd.DataFrame, slices_cfg: dict, *, target: str, time_column: str | None
) -> pd.DataFrame:
    """One `slice_<name>` column per declared slice (``target``: the label column)."""
    return pd.DataFrame(
        {
            f"slice_{s['name']}": assign(df, s, target=target, time_column=time_column).to_numpy()
            for s in slices_cfg["slices"]
        },
        index=df.index,
    )
