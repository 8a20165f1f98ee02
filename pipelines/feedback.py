"""Production feedback exported into data/feedback/: read, validate, quarantine, join.

`python -m pipelines.export` writes immutable partitions, one kind per file:
``data/feedback/date=YYYY-MM-DD/part-predictions-<seq>-<seq>.parquet`` (request_id, ts,
model_version, event_time, prediction, probabilities, latency_ms, one ``x_<feature>`` column
per feature) and ``part-feedback-...parquet`` (request_id, ts, label, action, source).

Files are read one at a time, so memory follows the largest partition, not the whole
history. Every row is either kept or quarantined with a reason: counts in = kept +
quarantined, per kind.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.parquet as pq

PREDICTIONS = "part-predictions-"
FEEDBACK = "part-feedback-"
ACTIONS = ("accept", "correct", "reject")
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)  # clock skew between servers and the exporter
QUARANTINE_COLUMNS = ["kind", "file", "request_id", "reason", "record"]


@dataclass
class Feedback:
    """Labelled production rows in snapshot form, plus what was rejected and why."""

    labelled: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict = field(default_factory=dict)


def partitions(data_dir: Path, prefix: str) -> list[Path]:
    return sorted(Path(data_dir).glob(f"feedback/date=*/{prefix}*.parquet"))


def _reasons(df: pd.DataFrame, raw: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.Series:
    """Validate with pandera; return one reason per failing row (empty string if valid)."""
    reasons = pd.Series("", index=df.index, dtype=object)
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as e:
        cases = e.failure_cases.dropna(subset=["index"])
        for idx, group in cases.groupby("index", sort=True):
            parts = []
            for _, case in group.iterrows():
                column = case["column"]
                value = raw.at[idx, column] if column in raw.columns else case["failure_case"]
                parts.append(f"{column}: fails {case['check']} (got {value!r})")
            reasons.at[idx] = "; ".join(parts)
    return reasons


def _quarantine(kind: str, path: Path, raw: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    bad = reasons[reasons != ""]
    rows = raw.loc[bad.index]
    return pd.DataFrame(
        {
            "kind": kind,
            "file": str(path),
            "request_id": rows.get("request_id", pd.Series(index=rows.index, dtype=object))
            .astype(str)
            .to_numpy(),
            "reason": bad.to_numpy(),
            "record": [json.dumps(r, default=str, sort_keys=True) for r in rows.to_dict("records")],
        }
    )


def _whole_file(kind: str, path: Path, raw: pd.DataFrame, reason: str) -> pd.DataFrame:
    return _quarantine(kind, path, raw, pd.Series(reason, index=raw.index, dtype=object))


def _timestamps(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, errors="coerce", utc=True)


def read_predictions(data_dir: Path, features: list[str], now: pd.Timestamp):
    """Valid prediction records (first of each request id) and the rejected ones."""
    required = ["request_id", "ts", *[f"x_{f}" for f in features]]
    schema = pa.DataFrameSchema(
        {
            "request_id": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
            "ts": pa.Column(
                "datetime64[ns, UTC]", pa.Check.le(now + FUTURE_TOLERANCE), nullable=False
            ),
            **{
                f"x_{f}": pa.Column(
                    float, pa.Check(np.isfinite, element_wise=False), nullable=False
                )
                for f in features
            },
        }
    )
    kept, rejected = [], []
    for path in partitions(data_dir, PREDICTIONS):
        raw = pq.read_table(path).to_pandas()
        missing = [c for c in required if c not in raw.columns]
        if missing:
            rejected.append(_whole_file("prediction", path, raw, f"missing column(s) {missing}"))
            continue
        df = raw.copy()
        df["request_id"] = df["request_id"].astype("string").astype(object)
        df["ts"] = _timestamps(df["ts"])
        for f in features:
            df[f"x_{f}"] = pd.to_numeric(df[f"x_{f}"], errors="coerce").astype(float)
        reasons = _reasons(df[required], raw, schema)
        rejected.append(_quarantine("prediction", path, raw, reasons))
        good = df[reasons == ""].copy()
        good["_file"] = str(path)
        kept.append(good)
    valid = (
        pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=[*required, "_file"])
    )
    valid = valid.sort_values(["ts", "_file"], kind="stable")
    dup = valid.duplicated("request_id", keep="first")
    if dup.any():
        first = valid.drop_duplicates("request_id").set_index("request_id")["_file"]
        reasons = valid.loc[dup, "request_id"].map(
            lambda r: f"duplicate request_id (first in {first[r]})"
        )
        rejected.append(
            _quarantine(
                "prediction",
                Path("(several files)"),
                valid.drop(columns="_file"),
                reasons.reindex(valid.index, fill_value=""),
            )
        )
    return valid[~dup].drop(columns="_file"), rejected


def read_feedback(data_dir: Path, classes: list[str], known: set[str], now: pd.Timestamp):
    """Valid feedback records for known request ids, and the rejected ones."""
    schema = pa.DataFrameSchema(
        {
            "request_id": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
            "ts": pa.Column(
                "datetime64[ns, UTC]", pa.Check.le(now + FUTURE_TOLERANCE), nullable=False
            ),
            "label": pa.Column(str, pa.Check.isin(classes), nullable=True),
            "action": pa.Column(str, pa.Check.isin(ACTIONS), nullable=True),
        }
    )
    kept, rejected = [], []
    for path in partitions(data_dir, FEEDBACK):
        raw = pq.read_table(path).to_pandas()
        missing = [c for c in ("request_id", "ts", "label") if c not in raw.columns]
        if missing:
            rejected.append(_whole_file("feedback", path, raw, f"missing column(s) {missing}"))
            continue
        df = raw.copy()
        df["request_id"] = df["request_id"].astype("string").astype(object)
        df["ts"] = _timestamps(df["ts"])
        df["label"] = df["label"].where(df["label"].isna(), df["label"].astype(str))
        df["action"] = df.get("action", pd.Series(None, index=df.index, dtype=object))
        df["source"] = df.get("source", pd.Series("unknown", index=df.index, dtype=object))
        reasons = _reasons(df[["request_id", "ts", "label", "action"]], raw, schema)
        # Membership in a large id set is a plain pandas isin: as a pandera check the set
        # would be copied into the schema, which costs more than the whole validation.
        unknown = (reasons == "") & ~df["request_id"].isin(known)
        reasons[unknown] = df.loc[unknown, "request_id"].map(
            lambda r: f"request_id: no prediction with this id (got {r!r})"
        )
        no_label = (reasons == "") & df["label"].isna() & (df["action"] != "accept")
        reasons[no_label] = "label: missing (only an 'accept' action may omit it)"
        rejected.append(_quarantine("feedback", path, raw, reasons))
        kept.append(df[reasons == ""])
    valid = (
        pd.concat(kept, ignore_index=True)
        if kept
        else pd.DataFrame(columns=["request_id", "ts", "label", "action", "source"])
    )
    return valid, rejected


def load(
    data_dir: Path,
    ds: dict,
    features: list[str],
    classes: list[str],
    now: pd.Timestamp | None = None,
) -> Feedback:
    """Join predictions with their latest feedback into labelled rows in snapshot form."""
    now = now or pd.Timestamp(dt.datetime.now(dt.timezone.utc))
    preds, rejected = read_predictions(data_dir, features, now)
    fb, fb_rejected = read_feedback(data_dir, classes, set(preds["request_id"]), now)
    rejected += fb_rejected
    latest = fb.sort_values("ts", kind="stable").drop_duplicates("request_id", keep="last")
    joined = preds.merge(latest, on="request_id", suffixes=("", "_feedback"))
    if joined.empty:
        joined = joined.assign(ts=pd.Series(dtype="datetime64[ns, UTC]"))
    label = joined["label"].where(joined["label"].notna(), joined.get("prediction"))
    when = _timestamps(joined["event_time"]) if "event_time" in joined else joined["ts"]
    when = when.where(when.notna(), joined["ts"])
    labelled = pd.DataFrame({f: joined[f"x_{f}"].to_numpy(dtype=float) for f in features})
    labelled[ds["target"]] = label.astype(str).to_numpy()
    labelled["_when"] = when.dt.tz_localize(None).to_numpy()
    labelled["origin"] = ("feedback:" + joined["source"].fillna("unknown").astype(str)).to_numpy()
    labelled = labelled[labelled[ds["target"]].isin(classes)]  # accepted unknown predictions
    quarantine = (
        pd.concat([r for r in rejected if len(r)], ignore_index=True)
        if any(len(r) for r in rejected)
        else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    )
    counts = {
        "predictions_in": int(len(preds) + (quarantine["kind"] == "prediction").sum()),
        "predictions_kept": len(preds),
        "feedback_in": int(len(fb) + (quarantine["kind"] == "feedback").sum()),
        "feedback_kept": len(fb),
        "quarantined": len(quarantine),
        "labelled_rows": len(labelled),
    }
    return Feedback(
        labelled.sort_values("_when", kind="stable").reset_index(drop=True), quarantine, counts
    )
