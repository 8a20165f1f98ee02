"""Stage `collect`: materialise a validated dataset snapshot with the declared splits.

Reads params `seed`, `dataset` and `allowed_targets`, the table ``dataset.source`` returns,
and the feedback landing zone `data/feedback/`. Writes
artifacts/snapshot/{train,val,production}.parquet and schema.json, and
reports/quarantine.parquet: every feedback row that failed validation, with its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.capture import feedback
from closedloop.data.snapshot import (
    frame_hash,
    frame_schema,
    load_source,
    resolve_columns,
    split_frame,
    validate_frame,
)
from closedloop.io import atomic_dir, atomic_path
from closedloop.paths import DATA_DIR, QUARANTINE, SCHEMA, SNAPSHOT_DIR

log = logging.getLogger("closedloop.collect")


def collect(
    params: dict, out_dir: Path = SNAPSHOT_DIR, data_dir: Path = DATA_DIR
) -> SnapshotSchema:
    """Build the snapshot for ``params`` in ``out_dir``; return its schema.json."""
    ds = params["dataset"]
    raw = load_source(ds, params["allowed_targets"])
    features, classes = resolve_columns(ds, raw)
    missing = [
        c for c in [*features, ds["target"], ds["time_column"]] if c and c not in raw.columns
    ]
    if missing:
        from closedloop.errors import DataError

        raise DataError(
            f"conf/dataset/{ds['name']}.yaml: column(s) {missing} not in what dataset.source "
            f"({ds['source']['_target_']}) returned "
            f"(it has: {', '.join(map(str, raw.columns))})"
        )
    frame = validate_frame(raw, frame_schema(ds, features, classes), f"dataset {ds['name']}")
    frame["origin"] = "dataset"
    splits = split_frame(frame, ds, params["seed"])
    keep = [*([ds["time_column"]] if ds["time_column"] else []), *features, ds["target"], "origin"]
    fb = feedback.load(data_dir, ds, features, classes) if ds["feedback"]["enabled"] else None
    windows = join_feedback(splits, fb, ds) if fb is not None else {}

    record = {
        "dataset": ds["name"],
        "source": ds["source"],
        "target": ds["target"],
        "time_column": ds["time_column"],
        "features": features,
        "classes": classes,
        "splits": {},
        "feedback_files": sorted(  # exported feedback only, not a user's tables in data/raw/
            str(p.relative_to(data_dir)) for p in (Path(data_dir) / "feedback").rglob("*.parquet")
        ),
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
    quarantine = (
        fb.quarantine if fb is not None else pd.DataFrame(columns=feedback.QUARANTINE_COLUMNS)
    )
    with atomic_path(QUARANTINE) as tmp_file:
        quarantine.astype(str).to_parquet(tmp_file, index=False)
    for name, s in schema.splits.items():
        log.info("collect: %s %d rows", name, s.rows)
    if fb is not None:
        log.info("collect: feedback %s", fb.counts)
    return schema


def join_feedback(splits: dict[str, pd.DataFrame], fb: feedback.Feedback, ds: dict) -> dict:
    """Older labelled feedback joins train; the newest `eval_days` replace the production window."""
    rows = fb.labelled
    if rows.empty:
        return {"production_from": "dataset"}
    cutoff = rows["_when"].max() - pd.Timedelta(days=ds["feedback"]["eval_days"])
    if ds["time_column"]:
        rows = rows.assign(**{ds["time_column"]: rows["_when"].dt.normalize()})
    older, newer = rows[rows["_when"] <= cutoff], rows[rows["_when"] > cutoff]
    splits["train"] = pd.concat([splits["train"], older.drop(columns="_when")], ignore_index=True)
    splits["production"] = newer.drop(columns="_when").reset_index(drop=True)
    return {
        "production_from": "feedback",
        "feedback_train_rows": len(older),
        "feedback_production_rows": len(newer),
        "production_window": [str(newer["_when"].min().date()), str(newer["_when"].max().date())],
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
