"""Export: store → immutable partitions, exactly once, crash-safe, on SQLite and PostgreSQL,
also while other servers are still writing; collect joins them."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, insert

from closedloop.capture import export as export_mod
from closedloop.capture.export import WATERMARK, export
from closedloop.capture.feedback import load
from closedloop.capture.store import (
    PREDICTIONS,
    FeedbackRecord,
    FeedbackStore,
    PredictionRecord,
    to_micros,
)
from closedloop.errors import StoreError
from tests.conftest import ROOT, run, store_rows

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
DS = {"target": "weather", "time_column": "date"}
PY_ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def fill(url: str, start: int, n: int, with_feedback: bool = True) -> None:
    """Real 2014 Seattle days as predictions, each corrected by its user."""
    from vega_datasets import local_data

    days = local_data.seattle_weather()
    days = days[days.date >= "2014-01-01"].iloc[start : start + n]
    store = FeedbackStore(url, batch_size=64, flush_interval_ms=5, personal={}, hash_key=None)
    now = dt.datetime.now(dt.timezone.utc)
    for i, row in zip(range(start, start + n), days.itertuples(), strict=True):
        store.log_prediction(
            PredictionRecord(
                f"req-{i}",
                now,
                "v1.0.0",
                {f: float(getattr(row, f)) for f in FEATURES},
                "sun",
                {"sun": 1.0},
                1.0,
                row.date.date().isoformat(),
            )
        )
        if with_feedback:
            store.log_feedback(FeedbackRecord(f"req-{i}", now, row.weather, "correct", "app"))
    store.flush()
    store.close()


def files(data):
    return sorted(p.name for p in data.rglob("part-*.parquet"))


def exported_ids(data, kind: str = "predictions") -> list[str]:
    parts = [pd.read_parquet(p) for p in data.rglob(f"part-{kind}-*.parquet")]
    return pd.concat(parts).request_id.tolist() if parts else []


def test_export_twice_exports_nothing_twice(store_url, tmp_path):
    url, data = store_url, tmp_path / "data"
    fill(url, 0, 100)
    assert export(url, data) == {"predictions": 100, "feedback": 100}
    before = files(data)
    assert export(url, data) == {"predictions": 0, "feedback": 0}
    assert files(data) == before
    fill(url, 100, 20)
    assert export(url, data, chunk=7) == {"predictions": 20, "feedback": 20}
    fb = load(data, DS, FEATURES, CLASSES)
    assert fb.counts["predictions_in"] == fb.counts["predictions_kept"] == 120
    assert fb.counts["labelled_rows"] == 120 and fb.counts["quarantined"] == 0


def prediction_row(request_id: str) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "request_id": request_id,
        "ts": to_micros(now),
        "model_version": "v1",
        "event_time": "2014-03-01",
        "features": '{"precipitation": 0.0, "temp_max": 9.0, "temp_min": 2.0, "wind": 3.0}',
        "prediction": "sun",
        "probabilities": '{"sun": 1.0}',
        "latency_ms": 1.0,
    }


def test_a_record_committed_while_an_earlier_insert_is_in_flight_is_exported_once(
    store_url, tmp_path
):
    """Two servers on one database: seq is taken at insert, not at commit, so seq 2 can
    commit while seq 1 is still in flight. An export then must not move its watermark past
    seq 1: held open, let another commit, export, commit, export again."""
    data = tmp_path / "data"
    FeedbackStore(store_url).close()  # the tables
    engine = create_engine(store_url)
    held = engine.connect()
    transaction = held.begin()
    held.execute(insert(PREDICTIONS).values(prediction_row("held")))  # seq 1, not committed

    def commit_another() -> None:
        with engine.begin() as conn:  # PostgreSQL: commits now; SQLite: waits for the writer
            conn.execute(insert(PREDICTIONS).values(prediction_row("other")))

    other = threading.Thread(target=commit_another)
    other.start()
    other.join(timeout=3)
    moved: list[dict] = []
    exporting = threading.Thread(target=lambda: moved.append(export(store_url, data)))
    exporting.start()
    deadline, waited = time.monotonic() + 20, False
    while exporting.is_alive() and time.monotonic() < deadline:  # until it ends or waits
        if engine.dialect.name == "postgresql":
            waiting = "select count(*) from pg_locks where not granted"
            if waited := store_rows(store_url, waiting)[0][0] > 0:
                break
        time.sleep(0.05)
    transaction.commit()
    held.close()
    other.join(30)
    exporting.join(60)
    moved.append(export(store_url, data))
    engine.dispose()
    assert sorted(exported_ids(data)) == ["held", "other"]  # each exactly once
    assert sum(m["predictions"] for m in moved) == 2
    assert waited or engine.dialect.name == "sqlite"  # PostgreSQL: export waited for "held"


def test_crash_mid_export_leaves_no_partial_file_and_no_moved_watermark(
    store_url, tmp_path, monkeypatch
):
    url, data = store_url, tmp_path / "data"
    fill(url, 0, 50)
    real = export_mod._write_partitions

    def crash_on_feedback(kind, df, out, exported_at):
        if kind == "feedback":
            raise KeyboardInterrupt("killed")
        return real(kind, df, out, exported_at)

    monkeypatch.setattr(export_mod, "_write_partitions", crash_on_feedback)
    with pytest.raises(KeyboardInterrupt):
        export(url, data)
    assert not (data / "feedback" / WATERMARK).exists()
    assert not list(data.rglob("*.tmp"))
    assert files(data) == []  # the prediction partitions written before the crash are gone
    monkeypatch.setattr(export_mod, "_write_partitions", real)
    export(url, data)
    preds = pd.concat(pd.read_parquet(p) for p in data.rglob("part-predictions-*.parquet"))
    assert len(preds) == 50 and preds.request_id.is_unique  # each record exactly once


def test_partitions_record_when_they_were_exported(tmp_path):
    url, data = f"sqlite:///{tmp_path / 'fb.db'}", tmp_path / "data"
    fill(url, 0, 5)
    before = dt.datetime.now(dt.timezone.utc)
    export(url, data)
    for path in data.rglob("part-*.parquet"):
        meta = pq.read_schema(path).metadata
        when = dt.datetime.fromisoformat(meta[b"closedloop.exported_at"].decode())
        assert before <= when <= dt.datetime.now(dt.timezone.utc)


def dvc_repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "add", "-q", "data"], repo)
    return repo


def closedloop_export(repo, url, *args):
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "export", "--store-url", url, *args],
        cwd=repo,
        env=PY_ENV,
        capture_output=True,
        text=True,
    )


def test_export_updates_data_dvc(tmp_path):
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    fill(url, 0, 10)
    repo = dvc_repo(tmp_path)
    before = (repo / "data.dvc").read_text()
    run(["closedloop", "export", "--store-url", url], repo)
    after = (repo / "data.dvc").read_text()
    assert after != before and "nfiles: 3" in after  # two partitions and the watermark


KILLED_WHILE_WRITING = """
import os, signal, sys
import pyarrow.parquet as pq
from closedloop.capture.export import export
real = pq.write_table
def write_then_die(table, where, **kw):
    real(table, where, **kw)
    os.kill(os.getpid(), signal.SIGKILL)  # a kill -9 between writing a file and renaming it
pq.write_table = write_then_die
export(sys.argv[1], "data")
"""


def test_a_killed_export_leaves_no_temp_file_for_dvc_to_record(tmp_path):
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    fill(url, 0, 10)
    repo = dvc_repo(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, url], cwd=repo, env=PY_ENV)
    assert killed.returncode == -9
    assert list((repo / "data").rglob(".*.tmp"))  # what the kill left behind
    proc = closedloop_export(repo, url)
    assert proc.returncode == 0, proc.stderr
    assert not list((repo / "data").rglob("*.tmp"))
    assert "nfiles: 3" in (repo / "data.dvc").read_text()  # two partitions and the watermark


def test_a_busy_dvc_is_named_and_the_rerun_recovers(tmp_path):
    """Another DVC process holds the repository's lock (a `dvc add` still running, or one
    orphaned by a killed export): export says so in DVC's own words; rerun, it finishes."""
    import zc.lockfile

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    fill(url, 0, 10)
    repo = dvc_repo(tmp_path)
    lock = zc.lockfile.LockFile(str(repo / ".dvc" / "tmp" / "lock"))
    try:
        proc = closedloop_export(repo, url)
    finally:
        lock.close()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Unable to acquire lock" in lines[0], proc.stderr
    proc = closedloop_export(repo, url)
    assert proc.returncode == 0, proc.stderr
    assert "nfiles: 3" in (repo / "data.dvc").read_text()


def test_export_against_an_unreachable_database_is_one_line(tmp_path):
    proc = closedloop_export(
        tmp_path, "postgresql+psycopg://closedloop:hunter2@127.0.0.1:1/feedback", "--no-dvc"
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "127.0.0.1" in lines[0] and "hunter2" not in lines[0]


def test_files_left_by_a_killed_export_are_replaced_not_duplicated(store_url, tmp_path):
    """A SIGKILL skips all cleanup: the next export removes files above the watermark."""
    url, data = store_url, tmp_path / "data"
    fill(url, 0, 30)
    export(url, data, chunk=10)
    fill(url, 30, 30)
    export(url, data, chunk=25)  # a run that "died" after its files, before its watermark
    mark = data / "feedback" / WATERMARK
    store = pd.read_json(mark, typ="series")["store"]
    mark.write_text(f'{{"feedback": 30, "predictions": 30, "store": "{store}"}}\n')
    fill(url, 60, 5)  # more records arrive before the re-run: its chunks differ
    assert export(url, data, chunk=25) == {"predictions": 35, "feedback": 35}
    preds = pd.concat(pd.read_parquet(p) for p in data.rglob("part-predictions-*.parquet"))
    assert len(preds) == 65 and preds.request_id.is_unique
    schema = pq.read_schema(next(data.rglob("part-predictions-*.parquet")))
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert all(schema.field(f"x_{f}").type == pa.float64() for f in FEATURES)


def recreate(url: str, tmp_path) -> None:
    """Delete the store: its files (SQLite) or its tables (PostgreSQL)."""
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"fb.db{suffix}").unlink(missing_ok=True)
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table predictions, feedback, store_meta")
    engine.dispose()


def test_a_recreated_store_is_refused_not_silently_skipped(store_url, tmp_path):
    """A deleted and recreated store restarts its seq at 1: below the old watermark, its
    records would never be exported. Export refuses it, naming both stores."""
    url, data = store_url, tmp_path / "data"
    fill(url, 0, 30)
    assert export(url, data) == {"predictions": 30, "feedback": 30}
    mark = (data / "feedback" / WATERMARK).read_text()
    recreate(url, tmp_path)
    fill(url, 30, 10)
    with pytest.raises(StoreError, match=r"is store \w+, but .*_watermark.json counts records"):
        export(url, data)
    assert (data / "feedback" / WATERMARK).read_text() == mark  # nothing moved
    assert export(url, tmp_path / "data-new") == {"predictions": 10, "feedback": 10}
