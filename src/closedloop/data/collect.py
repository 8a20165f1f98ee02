"""Stage `collect`: materialise a validated dataset snapshot with the declared splits.

Reads params `seed`, `dataset`, `allowed_targets` and `gates.min_samples`, the table
``dataset.source`` returns, and the feedback landing zone `data/feedback/`. Writes
artifacts/snapshot/{train,val,production}.parquet and schema.json, and
reports/quarantine.parquet: every feedback row (or unreadable file) that failed validation,
with its reason.

The production window comes from feedback only when it holds enough labelled rows to judge
on (``dataset.feedback.min_rows``, by default ``gates.min_samples``): a handful of rows dated
after the rest cannot become the window on their own. schema.json says where the window
came from and why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.capture import feedback
from closedloop.data.snapshot import (
    check_columns,
    frame_hash,
    frame_schema,
    load_source,
    resolve_columns,
    row_problems,
    split_frame,
    validate_frame,
)
from closedloop.errors import DataError
from closedloop.io import atomic_dir, atomic_path
from closedloop.models.encoding import category_text, policies
from closedloop.paths import DATA_DIR, QUARANTINE, SCHEMA, SNAPSHOT_DIR

log = logging.getLogger("closedloop.collect")


def collect(
    params: dict, out_dir: Path = SNAPSHOT_DIR, data_dir: Path = DATA_DIR
) -> SnapshotSchema:
    """Build the snapshot for ``params`` in ``out_dir``; return its schema.json."""
    ds = params["dataset"]
    raw = load_source(ds, params["allowed_targets"])
    numeric, categorical, classes = resolve_columns(ds, raw)
    features = [*numeric, *categorical]
    check_columns(ds, raw, numeric, categorical)
    personal_features = sorted(set(ds.get("personal") or {}) & set(features))
    if personal_features:
        raise DataError(
            f"conf/dataset/{ds['name']}.yaml: dataset.personal.{personal_features[0]}: "
            "is a model feature; hashing or dropping it leaves the model nothing to learn from "
            "(list only fields that are not features)"
        )
    raw = raw.reset_index(drop=True)
    reasons = row_problems(raw, ds, numeric, categorical, classes)
    bad = reasons != ""
    frame = raw.loc[~bad].assign(**{c: category_text(raw.loc[~bad, c]) for c in categorical})
    frame = validate_frame(frame, frame_schema(ds, numeric, categorical), f"dataset {ds['name']}")
    frame["origin"] = "dataset"
    frame["_row"] = frame.index  # the row's position in the source's table, for the quarantine
    splits = split_frame(frame, ds, params["seed"])
    if classes is None:  # learnt from the train split; other labels in val/production are held out
        classes = sorted(splits["train"][ds["target"]].astype(str).unique().tolist())
        for name in ("val", "production"):
            part = splits[name]
            unknown = ~part[ds["target"]].astype(str).isin(classes)
            for row in part.index[unknown]:
                reasons.loc[part.at[row, "_row"]] = (
                    f"target {ds['target']!r}: {part.at[row, ds['target']]!r} is not among the "
                    "classes learnt from the train split"
                )
            splits[name] = part.loc[~unknown].reset_index(drop=True)
    kept = sum(map(len, splits.values()))
    bad = reasons != ""
    rows = {
        "rows_in": len(raw),
        "kept": kept,
        "quarantined": int(bad.sum()),
        "unused": len(raw) - kept - int(bad.sum()),
        "reasons": {k: int(v) for k, v in reasons[bad].value_counts().sort_index().items()},
    }
    keep = [*([ds["time_column"]] if ds["time_column"] else []), *features, ds["target"], "origin"]
    imputed = [f for f, rule in policies(ds, features).items() if rule == "impute"]
    fb = (
        feedback.load(
            data_dir,
            ds,
            numeric,
            classes,
            categorical=categorical,
            imputed=imputed,
            task=ds["task"],
        )
        if ds["feedback"]["enabled"]
        else None
    )
    min_rows = ds["feedback"].get("min_rows") or params["gates"]["min_samples"]
    windows = join_feedback(splits, fb, ds, min_rows) if fb is not None else {}

    record = {
        "dataset": ds["name"],
        "task": ds["task"],
        "source": ds["source"],
        "target": ds["target"],
        "time_column": ds["time_column"],
        "features": features,
        "feature_types": {"numeric": numeric, "categorical": categorical},
        "missing": policies(ds, features),
        "classes": classes,
        "dataset_rows": rows,
        "splits": {},
        "feedback_files": _relative(fb.files if fb is not None else [], data_dir),
        "feedback_ignored_files": _relative(fb.ignored if fb is not None else [], data_dir),
        "feedback": {**(fb.counts if fb is not None else {}), **windows},
    }
    with atomic_dir(out_dir) as tmp:
        for name, part in splits.items():
            part = part[keep]
            part.to_parquet(tmp / f"{name}.parquet", index=False)
            record["splits"][name] = {
                "rows": len(part),
                "hash": frame_hash(part),
                **time_range(part, ds),
            }
        record["data_hash"] = frame_hash_of_hashes(record["splits"])
        schema = SnapshotSchema.model_validate(record)
        schema.write(tmp / SCHEMA.name)
    quarantine = pd.concat(
        [
            dataset_quarantine(raw[bad], reasons[bad], ds),
            *([fb.quarantine] if fb is not None and len(fb.quarantine) else []),
        ],
        ignore_index=True,
    )
    with atomic_path(QUARANTINE) as tmp_file:
        quarantine.astype(str).to_parquet(tmp_file, index=False)
    log.info(
        "collect: %s rows in train, %s in val, %s in production",
        *(f"{schema.splits[n].rows:,}" if n in schema.splits else "no" for n in SPLITS),
    )
    log.info(
        "collect: %s dataset rows: %s kept, %s quarantined (reports/quarantine.parquet), %s outside the splits",
        *(f"{rows[k]:,}" for k in ("rows_in", "kept", "quarantined", "unused")),
    )
    if fb is not None:
        for line in feedback_summary(fb.counts, windows["production_reason"]):
            log.info("collect: %s", line)
    return schema


def dataset_quarantine(rows: pd.DataFrame, reasons: pd.Series, ds: dict) -> pd.DataFrame:
    """The dataset's rejected rows in the quarantine's columns: kind "dataset", the source,
    the row's position in the table the source returned, the reason and the raw record."""
    source = ds["source"].get("path") or ds["source"]["_target_"]
    return pd.DataFrame(
        {
            "kind": "dataset",
            "file": str(source),
            "request_id": [f"row {i}" for i in rows.index],
            "reason": reasons.to_numpy(),
            "record": [
                json.dumps(r, default=str, sort_keys=True)
                for r in rows.astype(object).where(rows.notna(), None).to_dict("records")
            ],
        },
        columns=feedback.QUARANTINE_COLUMNS,
    )


SPLITS = ("train", "val", "production")


def feedback_summary(counts: dict, reason: str) -> list[str]:
    """What the feedback gave, in sentences (the counts themselves are in schema.json)."""
    if not counts["predictions_in"] + counts["feedback_in"] + counts["files_quarantined"]:
        return [
            "no exported feedback in data/feedback/ yet: the production window is the dataset's own"
        ]
    lines = [
        f"feedback: {counts['predictions_in']:,} predictions and {counts['feedback_in']:,} "
        f"answers read, {counts['quarantined']:,} row(s) and {counts['files_quarantined']} "
        f"file(s) quarantined (reports/quarantine.parquet), {counts['labelled_rows']:,} "
        "labelled row(s) kept"
        + (
            f"; {counts['files_ignored']} unknown file(s) ignored"
            if counts["files_ignored"]
            else ""
        )
    ]
    if counts.get("labelled_undated"):
        lines.append(
            f"warning: {counts['labelled_undated']:,} labelled row(s) came without an "
            "event_time and are dated by when they were served, not by the period they "
            "describe; send event_time with /predict to place them"
        )
    lines.append(f"production window: {reason}")
    return lines


def _relative(paths: list[Path], data_dir: Path) -> list[str]:
    return sorted(Path(p).relative_to(data_dir).as_posix() for p in paths)


def join_feedback(
    splits: dict[str, pd.DataFrame], fb: feedback.Feedback, ds: dict, min_rows: int
) -> dict:
    """The newest `eval_days` of labelled feedback that hold at least `min_rows` rows replace
    the production window; older feedback joins train, newer rows wait (too few to judge on).

    Without such a window the dataset keeps its own and no feedback is used: feedback joining
    train could overlap the dataset's production window in time.
    """
    rows = fb.labelled
    days = ds["feedback"]["eval_days"]
    span = pd.Timedelta(days=days)
    when = rows["_when"].to_numpy()  # sorted
    # For each row as a window's last, how many rows lie in the eval_days up to it.
    in_window = np.arange(1, len(when) + 1) - np.searchsorted(when, when - span, side="right")
    enough = np.flatnonzero(in_window >= min_rows)
    if not len(enough):
        return {
            "production_from": "dataset",
            "feedback_held_rows": len(rows),
            "production_reason": (
                f"the dataset's: {len(rows)} labelled feedback row(s), and no {days}-day window "
                f"holds the {min_rows} a production window needs "
                "(dataset.feedback.min_rows, else gates.min_samples)"
            ),
        }
    end = pd.Timestamp(when[enough[-1]])
    if ds["time_column"]:
        rows = rows.assign(**{ds["time_column"]: rows["_when"].dt.normalize()})
    older = rows[rows["_when"] <= end - span]
    window = rows[(rows["_when"] > end - span) & (rows["_when"] <= end)]
    held = rows[rows["_when"] > end]
    splits["train"] = pd.concat([splits["train"], older.drop(columns="_when")], ignore_index=True)
    splits["production"] = window.drop(columns="_when").reset_index(drop=True)
    first, last = str(window["_when"].min().date()), str(end.date())
    reason = f"feedback: the newest {days} days holding at least {min_rows} labelled rows"
    if len(held):
        reason += (
            f"; {len(held)} newer row(s) ({held['_when'].min().date()}.."
            f"{held['_when'].max().date()}) are too few for a window of their own and wait"
        )
    return {
        "production_from": "feedback",
        "feedback_train_rows": len(older),
        "feedback_production_rows": len(window),
        "feedback_held_rows": len(held),
        "production_window": [first, last],
        "production_reason": reason,
    }


def time_range(part, ds: dict) -> dict:
    """First and last timestamp of a split (ISO dates), for staleness and lineage."""
    if not ds["time_column"] or part.empty:
        return {"time_min": None, "time_max": None}
    t = part[ds["time_column"]]
    return {"time_min": t.min().date().isoformat(), "time_max": t.max().date().isoformat()}


def frame_hash_of_hashes(splits: dict) -> str:
    import hashlib

    return hashlib.sha256(
        "".join(f"{k}:{v['hash']};" for k, v in sorted(splits.items())).encode()
    ).hexdigest()
