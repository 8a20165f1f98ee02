"""Export: move new records out of the feedback store into immutable Parquet partitions.

    closedloop export [--store-url URL] [--data-dir data] [--no-dvc]

Writes ``data/feedback/date=YYYY-MM-DD/part-<kind>-<firstseq>-<lastseq>.parquet`` (date: the
record's UTC ``ts``; one kind per file) for the records with ``seq`` above the watermark in
``data/feedback/_watermark.json``, then runs `dvc add data`. The store keeps its records
(feedback may arrive long after its prediction was exported); the watermark says what has
moved.

Crash-safe and idempotent. Each file is written whole (temp + rename) under a name fixed by
its seq range, and the watermark moves last, after the files are fsynced. A file above the
watermark was never committed: an export that fails removes what it wrote, and the next
export removes what a killed one left behind before it starts. Run twice, it exports nothing
twice. The store is read in chunks by seq, never all at once.

Prediction files: request_id, ts (timestamp[us, UTC]), model_version, event_time,
prediction, probabilities (JSON text), latency_ms and one ``x_<feature>`` column per feature
(float64; a personal field hashed by the store stays a string, a dropped one is absent).
Feedback files: request_id, ts, label, action, source.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from sqlalchemy import func, select

from closedloop.capture.feedback import FEEDBACK as FEEDBACK_PREFIX
from closedloop.capture.feedback import PREDICTIONS as PREDICTION_PREFIX
from closedloop.capture.store import FEEDBACK, PREDICTIONS, open_engine, store_id
from closedloop.errors import ConfigError, StoreError
from closedloop.io import atomic_path, read_json, write_json
from closedloop.paths import DATA_DIR

CHUNK = 200_000  # records read from the store at a time
WATERMARK = "_watermark.json"
KINDS = {"predictions": (PREDICTIONS, PREDICTION_PREFIX), "feedback": (FEEDBACK, FEEDBACK_PREFIX)}
PART = re.compile(r"part-(predictions|feedback)-(\d+)-(\d+)\.parquet")
DAY_US = 86_400_000_000
TS = pa.timestamp("us", tz="UTC")


def _table(kind: str, rows: list) -> pa.Table:
    """A chunk of store rows as an Arrow table in the partition schema (seq kept for naming)."""
    table, _ = KINDS[kind]
    columns = dict(zip(table.columns.keys(), zip(*rows, strict=True), strict=True))
    arrays = {"seq": pa.array(columns.pop("seq"), pa.int64())}
    arrays["request_id"] = pa.array(columns.pop("request_id"), pa.string())
    arrays["ts"] = pa.array(columns.pop("ts"), pa.int64()).cast(TS)
    features = columns.pop("features", None)
    for name, values in columns.items():
        arrays[name] = pa.array(values, pa.float64() if name == "latency_ms" else pa.string())
    if features is not None:
        parsed = pa_json.read_json(io.BytesIO("\n".join(features).encode()))
        for name, column in zip(parsed.column_names, parsed.columns, strict=True):
            numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
            arrays[f"x_{name}"] = column.cast(pa.float64()) if numeric else column
    return pa.table(arrays)


def _write_partitions(kind: str, table: pa.Table, out: Path) -> list[Path]:
    """One file per UTC day of ``ts``; return the files written."""
    prefix = KINDS[kind][1]
    micros = table["ts"].cast(pa.int64()).to_numpy()
    days = micros // DAY_US
    written = []
    for day in np.unique(days):
        part = table.take(np.flatnonzero(days == day))
        seq = part["seq"].to_numpy()
        date = np.datetime64(int(day), "D").astype(str)
        target = out / f"date={date}" / f"{prefix}{seq.min()}-{seq.max()}.parquet"
        with atomic_path(target) as tmp:
            pq.write_table(part.drop_columns("seq"), tmp)
        written.append(target)
    return written


def _uncommitted(out: Path, mark: dict) -> list[Path]:
    """Partition files above the watermark: left by an export that did not finish."""
    found = []
    for path in out.glob("date=*/part-*.parquet"):
        m = PART.fullmatch(path.name)
        if m and int(m.group(2)) > mark[m.group(1)]:
            found.append(path)
    return found


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def _fsync_dirs(paths: list[Path]) -> None:
    """Make the renames durable before the watermark says they happened."""
    for directory in {p.parent for p in paths}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def export(store_url: str, data_dir: Path = DATA_DIR, chunk: int = CHUNK) -> dict:
    """Export every record past the watermark; return how many of each kind moved."""
    out = Path(data_dir) / "feedback"
    mark_path = out / WATERMARK
    mark = read_json(mark_path) if mark_path.exists() else {"predictions": 0, "feedback": 0}
    _remove(_uncommitted(out, mark))
    engine = open_engine(store_url, create=False)
    moved, new_mark, written = {}, dict(mark), []
    try:
        new_mark["store"] = store_id(engine)
        if mark.get("store", new_mark["store"]) != new_mark["store"]:
            raise StoreError(
                f"{engine.url.render_as_string(hide_password=True)} is store "
                f"{new_mark['store']}, but {mark_path} counts records of store {mark['store']}: "
                "export a new store into a new data directory (--data-dir)"
            )
        with engine.connect() as conn:
            for kind, (table, _) in KINDS.items():
                moved[kind] = 0
                # a live server keeps writing: export up to what exists now, not a moving end
                end = conn.execute(select(func.max(table.c.seq))).scalar() or 0
                while new_mark[kind] < end:
                    rows = conn.execute(
                        select(table)
                        .where(table.c.seq > new_mark[kind], table.c.seq <= end)
                        .order_by(table.c.seq)
                        .limit(chunk)
                    ).all()
                    written += _write_partitions(kind, _table(kind, rows), out)
                    moved[kind] += len(rows)
                    new_mark[kind] = int(rows[-1].seq)
        _fsync_dirs(written)
        if new_mark != mark:
            write_json(mark_path, new_mark)  # last: until here, nothing is committed
    except BaseException:
        _remove(written)  # not committed: leave no file the watermark does not cover
        raise
    finally:
        engine.dispose()
    return moved


def dvc_add(data_dir: Path) -> None:
    """Record the new partitions in data.dvc (`dvc add data`)."""
    data = Path(data_dir).resolve()
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "-q", data.name],
        cwd=data.parent,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise ConfigError(f"`dvc add {data_dir}` failed: {lines[-1]}")
