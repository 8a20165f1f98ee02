"""Stage `collect`: materialise a validated dataset snapshot with the declared splits.

Reads params `seed` and `dataset`, plus the feedback landing zone `data/`. Writes
artifacts/snapshot/{train,val,production}.parquet and schema.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.config import load_params
from pipelines.data import (
    frame_hash,
    frame_schema,
    load_source,
    resolve_columns,
    split_frame,
    validate_frame,
)
from pipelines.io import atomic_dir, run_stage, write_json
from pipelines.paths import DATA_DIR, SCHEMA, SNAPSHOT_DIR

log = logging.getLogger("closedloop.collect")


def collect(params: dict, out_dir: Path = SNAPSHOT_DIR, data_dir: Path = DATA_DIR) -> dict:
    """Build the snapshot for ``params`` in ``out_dir``; return its schema record."""
    ds = params["dataset"]
    raw = load_source(ds)
    features, classes = resolve_columns(ds, raw)
    missing = [
        c for c in [*features, ds["target"], ds["time_column"]] if c and c not in raw.columns
    ]
    if missing:
        from pipelines.data import DataError

        raise DataError(
            f"conf/dataset/{ds['name']}.yaml: column(s) {missing} not in source {ds['source']!r} "
            f"(it has: {', '.join(map(str, raw.columns))})"
        )
    frame = validate_frame(raw, frame_schema(ds, features, classes), f"dataset {ds['name']}")
    splits = split_frame(frame, ds, params["seed"])
    keep = [*([ds["time_column"]] if ds["time_column"] else []), *features, ds["target"]]

    record = {
        "dataset": ds["name"],
        "source": ds["source"],
        "target": ds["target"],
        "time_column": ds["time_column"],
        "features": features,
        "classes": classes,
        "splits": {},
        "feedback_files": sorted(
            str(p.relative_to(data_dir)) for p in Path(data_dir).rglob("*.parquet")
        ),
    }
    with atomic_dir(out_dir) as tmp:
        for name, part in splits.items():
            part = part[keep]
            part.to_parquet(tmp / f"{name}.parquet", index=False)
            record["splits"][name] = {"rows": len(part), "hash": frame_hash(part), **time_range(part, ds)}
        record["data_hash"] = frame_hash_of_hashes(record["splits"])
        write_json(tmp / SCHEMA.name, record)
    for name, s in record["splits"].items():
        log.info("collect: %s %d rows", name, s["rows"])
    return record


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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    record = collect(load_params())
    print(f"collect: snapshot {record['data_hash'][:12]} -> {SNAPSHOT_DIR}/")


if __name__ == "__main__":
    run_stage(main)
