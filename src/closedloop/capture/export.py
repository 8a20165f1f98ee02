"""Export: move new records out of the feedback store into immutable Parquet partitions.

    closedloop export [--store-url URL] [--data-dir data] [--no-dvc]

Writes ``data/feedback/date=YYYY-MM-DD/part-<kind>-<firstseq>-<lastseq>.parquet`` (date: the
record's UTC ``ts``; one kind per file) for the records with ``seq`` above the watermark in
``data/feedback/_watermark.json``, then runs `dvc add data` (DVC's Python API, in this
process: killing export kills it too, so no orphaned `dvc add` keeps DVC's lock). The store
keeps its records (feedback may arrive long after its prediction was exported); the
watermark says what has moved. Each file carries its export time in its Parquet metadata
(``closedloop.exported_at``): collect quarantines any row in it dated later.

Crash-safe and idempotent. Each file is written whole (temp + rename) under a name fixed by
its seq range, and the watermark moves last, after the files are fsynced. A file above the
watermark was never committed: an export that fails removes what it wrote, and the next
export removes what a killed one left behind (files above the watermark, temporary files)
before it starts. Run twice, it exports nothing twice. One export at a time writes into a
data directory (a lock on it). The store is read in chunks by seq, never all at once.

Safe beside live writers: only records below every insert still in flight are exported (see
``settled_ends``), so a record that commits after a later one is never skipped.

Prediction files: request_id, ts (timestamp[us, UTC]), model_version, event_time,
prediction, probabilities (JSON text), latency_ms, the rollout's columns (error, arm, share,
shadow_prediction, shadow_latency_ms, shadow_error: null without a rollout; see
closedloop.rollout.records) and one ``x_<feature>`` column per feature (float64; a personal
field hashed by the store stays a string, a dropped one is absent).
Feedback files: request_id, ts, label, action, source.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from closedloop.capture.feedback import EXPORTED_AT, PART
from closedloop.capture.feedback import FEEDBACK as FEEDBACK_PREFIX
from closedloop.capture.feedback import PREDICTIONS as PREDICTION_PREFIX
from closedloop.capture.store import (
    FEEDBACK,
    PREDICTIONS,
    database_error,
    open_engine,
    redact,
    store_id,
)
from closedloop.errors import ConfigError, StoreError
from closedloop.io import atomic_path, read_json, write_json
from closedloop.paths import DATA_DIR

CHUNK = 200_000  # records read from the store at a time
WATERMARK = "_watermark.json"
KINDS = {"predictions": (PREDICTIONS, PREDICTION_PREFIX), "feedback": (FEEDBACK, FEEDBACK_PREFIX)}
DAY_US = 86_400_000_000
TS = pa.timestamp("us", tz="UTC")
FLOATS = ("latency_ms", "share", "shadow_latency_ms")  # the other plain columns are text
LOCK_TIMEOUT = "30s"  # longest export waits for an insert still in flight (PostgreSQL)


def _table(kind: str, rows: list) -> pa.Table:
    """A chunk of store rows as an Arrow table in the partition schema (seq kept for naming)."""
    table, _ = KINDS[kind]
    columns = dict(zip(table.columns.keys(), zip(*rows, strict=True), strict=True))
    arrays = {"seq": pa.array(columns.pop("seq"), pa.int64())}
    arrays["request_id"] = pa.array(columns.pop("request_id"), pa.string())
    arrays["ts"] = pa.array(columns.pop("ts"), pa.int64()).cast(TS)
    features = columns.pop("features", None)
    for name, values in columns.items():
        arrays[name] = pa.array(values, pa.float64() if name in FLOATS else pa.string())
    if features is not None:
        parsed = pa_json.read_json(io.BytesIO("\n".join(features).encode()))
        for name, column in zip(parsed.column_names, parsed.columns, strict=True):
            numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
            arrays[f"x_{name}"] = column.cast(pa.float64()) if numeric else column
    return pa.table(arrays)


def _write_partitions(kind: str, table: pa.Table, out: Path, exported_at: str) -> list[Path]:
    """One file per UTC day of ``ts``, stamped with the export time; return the files."""
    prefix = KINDS[kind][1]
    micros = table["ts"].cast(pa.int64()).to_numpy()
    days = micros // DAY_US
    written = []
    for day in np.unique(days):
        part = table.take(np.flatnonzero(days == day)).drop_columns("seq")
        seq = table["seq"].take(np.flatnonzero(days == day)).to_numpy()
        date = np.datetime64(int(day), "D").astype(str)
        target = out / f"date={date}" / f"{prefix}{seq.min()}-{seq.max()}.parquet"
        with atomic_path(target) as tmp:
            pq.write_table(part.replace_schema_metadata({EXPORTED_AT: exported_at}), tmp)
        written.append(target)
    return written


def _uncommitted(out: Path, mark: dict) -> list[Path]:
    """What an export that did not finish left: partitions above the watermark, temp files."""
    found = []
    for path in out.glob("date=*/part-*.parquet"):
        m = PART.fullmatch(path.relative_to(out).as_posix())
        if m and int(m.group("first")) > mark[m.group("kind")]:
            found.append(path)
    litter = [*out.glob("date=*/.part-*.tmp"), *out.glob(f".{WATERMARK}.*.tmp")]
    return found + litter


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


@contextlib.contextmanager
def _one_export_at_a_time(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the feedback directory itself (no lock file for DVC to see)."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{out}: another export is writing into it; try again when it ends"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def settled_ends(conn: Connection) -> dict[str, int]:
    """For each table, the seq up to which every record is committed or never will be.

    ``seq`` is taken when a record is inserted, not when it commits: with two servers on one
    database, seq 8 can commit while seq 7 is still in flight. Exporting up to the largest
    seq in sight would move the watermark past 7 before 7 exists, and 7 would never be
    exported. So export reads the largest seq only at a moment when no insert is in flight:

    - SQLite has one writer at a time, and a seq is taken under its write lock: whatever has
      committed is below every seq still to come.
    - PostgreSQL: ``LOCK TABLE ... IN SHARE MODE`` waits until no transaction holds the ROW
      EXCLUSIVE lock that every INSERT keeps until it ends, and keeps new inserts out while
      the largest seq is read; then it is let go. Any later insert takes a higher seq (the
      tables' sequences are made with CACHE 1). Writers pause for one SELECT; an insert
      held open longer than LOCK_TIMEOUT makes export stop with one line, not wait forever.

    Chosen over comparing each row's ``xmin`` with ``pg_snapshot_xmin(pg_current_snapshot())``
    (32-bit xids against 64-bit xid8, and no index on xmin: a full scan every export), over
    a commit-ordered log table (a second write per record) and over a per-row "exported"
    marker (export would have to write into the store). Other databases are refused: their
    commit order is not proven here.
    """
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise StoreError(
            f"export reads SQLite and PostgreSQL stores, not {dialect}: "
            "it cannot prove which records have committed"
        )
    with conn.begin():
        if dialect == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            names = ", ".join(table.name for table, _ in KINDS.values())
            conn.exec_driver_sql(f"LOCK TABLE {names} IN SHARE MODE")
        return {
            kind: conn.execute(select(func.max(table.c.seq))).scalar() or 0
            for kind, (table, _) in KINDS.items()
        }


def export(store_url: str, data_dir: Path = DATA_DIR, chunk: int = CHUNK) -> dict:
    """Export every settled record past the watermark; return how many of each kind moved."""
    out = Path(data_dir) / "feedback"
    with _one_export_at_a_time(out):
        mark_path = out / WATERMARK
        mark = read_json(mark_path) if mark_path.exists() else {"predictions": 0, "feedback": 0}
        _remove(_uncommitted(out, mark))
        engine = open_engine(store_url, create=False)
        try:
            return _export(engine, out, mark, chunk)
        except SQLAlchemyError as e:
            if "lock timeout" in str(e).lower():
                raise StoreError(
                    f"store {redact(engine.url)}: an insert has been in flight for over "
                    f"{LOCK_TIMEOUT} (a transaction left open?); nothing exported, try again"
                ) from None
            raise database_error(e, engine.url) from None
        finally:
            engine.dispose()


def _export(engine, out: Path, mark: dict, chunk: int) -> dict:
    mark_path = out / WATERMARK
    moved, new_mark, written = {}, dict(mark), []
    try:
        new_mark["store"] = store_id(engine)
        if mark.get("store", new_mark["store"]) != new_mark["store"]:
            raise StoreError(
                f"{redact(engine.url)} is store "
                f"{new_mark['store']}, but {mark_path} counts records of store {mark['store']}: "
                "export a new store into a new data directory (--data-dir)"
            )
        with engine.connect() as conn:
            ends = settled_ends(conn)  # a live server keeps writing: not a moving end
            exported_at = dt.datetime.now(dt.timezone.utc).isoformat()  # after every record
            for kind, (table, _) in KINDS.items():
                moved[kind] = 0
                while new_mark[kind] < ends[kind]:
                    rows = conn.execute(
                        select(table)
                        .where(table.c.seq > new_mark[kind], table.c.seq <= ends[kind])
                        .order_by(table.c.seq)
                        .limit(chunk)
                    ).all()
                    written += _write_partitions(kind, _table(kind, rows), out, exported_at)
                    moved[kind] += len(rows)
                    new_mark[kind] = int(rows[-1].seq)
        _fsync_dirs(written)
        if new_mark != mark:
            write_json(mark_path, new_mark)  # last: until here, nothing is committed
    except BaseException:
        _remove(written)  # not committed: leave no file the watermark does not cover
        raise
    return moved


def dvc_add(data_dir: Path) -> None:
    """Record the new partitions in data.dvc (`dvc add data`), with DVC's own error."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    data = Path(data_dir).resolve()
    try:
        with Repo(str(data.parent)) as repo:
            repo.add(str(data))
    except DvcException as e:
        why = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"`dvc add {data_dir}` failed: {why}") from None


def reset(store_url: str, data_dir: Path = DATA_DIR) -> list[str]:
    """Start capture again: remove a local SQLite store (with its -wal and -shm files) and
    data/feedback/ (the exported partitions and the watermark), then `dvc add data` so
    data.dvc describes what is left. Nothing git tracks is removed: the store and data/ are
    ignored by git (data.dvc is rewritten, to its committed text when nothing was
    committed since). Stop the servers that write to the store first. Returns what was
    removed, as paths."""
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ConfigError(
            f"store {redact(url)}: reset removes only a local SQLite store; empty a server "
            "database yourself, then remove data/feedback/"
        )
    removed = []
    for path in (Path(url.database + suffix) for suffix in ("", "-wal", "-shm", "-journal")):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    out = Path(data_dir) / "feedback"
    if out.exists():
        with _one_export_at_a_time(out):  # never under a running export
            files = sum(p.is_file() for p in out.rglob("*"))
            shutil.rmtree(out)
        removed.append(f"{out}/ ({files} file(s), the watermark among them)")
    if Path(data_dir).exists():
        dvc_add(Path(data_dir))
    return removed
