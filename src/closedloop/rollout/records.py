"""Per-request records for the rollout decision and the monitor, from exported partitions.

`closedloop export` writes ``data/feedback/date=…/part-predictions-*.parquet`` and
``part-feedback-*.parquet`` (see closedloop.capture.export). This module reads them back as one
table, one row per request, with its latest feedback joined on. The columns:

============================  ==================================================================
request_id, ts                the request and when it was answered (UTC)
model_version                 the answering model
prediction, probabilities     its predicted class and class probabilities (JSON text)
latency_ms                    how long it took to answer
x_<feature>                   the features, as exported
error                         *rollout columns:* null when the request was answered, else a
                              short reason (the answering model failed)
arm                           ``champion`` or ``candidate``: which model answered. A file
                              without this column holds no rollout traffic.
share                         the candidate's share in force when the request was assigned
                              (canary); 0 in shadow mode
shadow_prediction             the model that did not answer, run on the same request: the
shadow_latency_ms             candidate in shadow mode (always), the champion in a canary
shadow_error                  (optional: it feeds the disagreement guardrail)
label, label_ts               the label from the latest feedback (an ``accept`` without a label
                              confirms the prediction) and when it arrived; null until then
============================  ==================================================================

Rows without a request id or a time cannot be placed and are counted as skipped; a request
logged twice keeps its first record. Counts in = kept + skipped + duplicates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from closedloop.capture.feedback import FEEDBACK, PREDICTIONS, partitions
from closedloop.errors import DataError

ROLLOUT_COLUMNS = (
    "error",
    "arm",
    "share",
    "shadow_prediction",
    "shadow_latency_ms",
    "shadow_error",
)
STRING_COLUMNS = (
    "request_id",
    "model_version",
    "prediction",
    "probabilities",
    "error",
    "arm",
    "shadow_prediction",
    "shadow_error",
    "label",
)


@dataclass
class Records:
    """One row per request, plus how many rows were read and why some were left out."""

    frame: pd.DataFrame
    counts: dict = field(default_factory=dict)


def _read(files: list[Path]) -> pa.Table | None:
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path))
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def read_records(data_dir: Path | str) -> Records:
    """Every exported prediction under ``data_dir``/feedback with its latest feedback."""
    preds = _read(partitions(Path(data_dir), PREDICTIONS))
    feedback = _read(partitions(Path(data_dir), FEEDBACK))
    frame = preds.to_pandas() if preds is not None else pd.DataFrame()
    labels = feedback.to_pandas() if feedback is not None else pd.DataFrame()
    return from_frames(frame, labels)


def from_frames(preds: pd.DataFrame, feedback: pd.DataFrame | None = None) -> Records:
    """Predictions and feedback rows (columns as exported) as one row per request."""
    rows_in = len(preds)
    df = preds.copy()
    for column in ("request_id", "ts"):
        if column not in df.columns:
            df[column] = pd.Series(dtype=object)
    df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce")
    placed = df["request_id"].notna() & df["ts"].notna()
    skipped = int((~placed).sum())
    df = df[placed].sort_values(["ts"], kind="stable")
    first = ~df["request_id"].duplicated(keep="first")
    duplicates = int((~first).sum())
    df = df[first].reset_index(drop=True)
    if feedback is not None or "label" not in df.columns:  # a table given whole keeps its labels
        df = df.drop(columns=[c for c in ("label", "label_ts") if c in df.columns])
        df = _join_feedback(df, feedback)
    elif "label_ts" not in df.columns:
        df["label_ts"] = pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
    for column in STRING_COLUMNS:
        if column in df.columns:
            df[column] = df[column].astype(object).where(df[column].notna(), None)
    counts = {"rows_in": rows_in, "kept": len(df), "skipped": skipped, "duplicates": duplicates}
    if counts["kept"] + skipped + duplicates != rows_in:
        raise AssertionError(f"records lost: {counts}")  # a bug here, never bad data
    return Records(df, counts)


def _join_feedback(df: pd.DataFrame, feedback: pd.DataFrame | None) -> pd.DataFrame:
    """The latest answer per request: its label, or the prediction an ``accept`` confirmed."""
    df["label"] = pd.Series([None] * len(df), dtype=object)
    df["label_ts"] = pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
    if feedback is None or feedback.empty or df.empty:
        return df
    fb = feedback.copy()
    fb["ts"] = pd.to_datetime(fb["ts"], utc=True, errors="coerce")
    if "action" not in fb.columns:
        fb["action"] = None
    if "label" not in fb.columns:
        fb["label"] = None
    fb = fb[fb["request_id"].notna() & fb["ts"].notna()]
    latest = fb.sort_values("ts", kind="stable").drop_duplicates("request_id", keep="last")
    latest = latest.set_index("request_id")
    hit = df["request_id"].map(latest["label"].to_dict())
    action = df["request_id"].map(latest["action"].to_dict())
    confirmed = hit.isna() & (action == "accept")
    label = hit.where(~confirmed, df.get("prediction"))
    when = df["request_id"].map(latest["ts"].to_dict())
    df["label"] = label.astype(object).where(label.notna(), None)
    df["label_ts"] = pd.to_datetime(when.where(label.notna()), utc=True)
    return df


def has_rollout(df: pd.DataFrame) -> bool:
    """Whether any record carries an arm: without the column there is no rollout traffic."""
    return "arm" in df.columns and bool(df["arm"].notna().any())


def probabilities(df: pd.DataFrame, classes: list[str] | None = None) -> tuple[np.ndarray, list]:
    """The probabilities column (JSON text per row) as an (n, k) array and its class order.

    Rows without probabilities are NaN rows; classes default to every key seen, sorted.
    """
    if "probabilities" not in df.columns:
        return np.full((len(df), 0), np.nan), []
    parsed = [json.loads(p) if isinstance(p, str) and p else None for p in df["probabilities"]]
    if classes is None:
        classes = sorted({k for p in parsed if p for k in p})
    out = np.full((len(df), len(classes)), np.nan)
    for i, p in enumerate(parsed):
        if p:
            out[i] = [float(p.get(c, 0.0)) for c in classes]
    return out, classes
