"""The feedback store: durable group commit, per-record failures, privacy, crash safety, on
SQLite and on PostgreSQL; a missing driver or an unreachable database is one line."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine

from closedloop.capture.store import FeedbackRecord, FeedbackStore, PredictionRecord
from closedloop.errors import StoreError
from tests.conftest import ROOT, store_rows

NOW = dt.datetime(2014, 3, 1, 12, 30, tzinfo=dt.timezone.utc)


def prediction(request_id: str, **features) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        ts=NOW,
        model_version="v1.0.0",
        features=features or {"wind": 4.7},
        prediction="sun",
        probabilities={"sun": 0.75, "rain": 0.25},
        latency_ms=0.5,
        event_time="2014-03-01",
    )


def execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def count(url: str, table: str) -> int:
    return store_rows(url, f"select count(*) from {table}")[0][0]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "fb.db"


def test_sqlite_runs_in_wal_mode_with_full_sync(db):
    store = FeedbackStore(f"sqlite:///{db}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        store.close()


def test_every_api_commits_and_close_flushes_fire_and_forget(store_url):
    store = FeedbackStore(store_url, batch_size=8, flush_interval_ms=10_000)
    store.submit_prediction(prediction("a")).result(10)
    assert count(store_url, "predictions") == 1  # resolved = committed

    async def concurrently():
        await asyncio.gather(*(store.persist_prediction(prediction(f"p{i}")) for i in range(300)))

    asyncio.run(concurrently())
    store.log_feedback(FeedbackRecord("a", NOW, "rain", "correct", "app"))
    store.log_prediction(prediction("late"))  # lingers: flush_interval is 10 s
    store.close()
    assert count(store_url, "predictions") == 302
    ts, features, probabilities = store_rows(
        store_url, "select ts, features, probabilities from predictions where request_id = 'a'"
    )[0]
    assert ts == int(NOW.timestamp() * 1_000_000)
    assert json.loads(features) == {"wind": 4.7}
    assert json.loads(probabilities) == {"sun": 0.75, "rain": 0.25}
    assert store_rows(store_url, "select request_id, label, action, source from feedback") == [
        ("a", "rain", "correct", "app")
    ]
    with pytest.raises(StoreError, match="closed"):
        store.submit_prediction(prediction("after"))


def test_json_columns_are_text_that_round_trips_every_value(db):
    """orjson writes them: floats come back bit for bit, numpy scalars and text are kept, a
    non-finite number is null (missing) and an integer beyond 64 bits is still written."""
    import numpy as np

    features = {
        "tiny": 1e-7,
        "third": 1 / 3,
        "huge": 1.7976931348623157e308,
        "city": "Zürich",
        "np64": np.float64(0.1),
        "np32": np.float32(0.5),
        "count": np.int64(3),
        "gap": None,
        "nan": float("nan"),
        "inf": float("-inf"),
    }
    store = FeedbackStore(f"sqlite:///{db}")
    store.submit_prediction(prediction("a", **features)).result(10)
    store.submit_prediction(prediction("b", big=2**70)).result(10)
    store.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select features, typeof(features), typeof(probabilities) from predictions"
            " order by request_id"
        ).fetchall()
    assert [r[1:] for r in rows] == [("text", "text")] * 2  # not BLOBs of UTF-8
    expected = {**features, "np64": 0.1, "np32": 0.5, "count": 3, "nan": None, "inf": None}
    assert json.loads(rows[0][0]) == expected
    assert json.loads(rows[1][0]) == {"big": 2**70}


def test_a_duplicate_fails_alone_not_its_batch(store_url):
    store = FeedbackStore(store_url, batch_size=64)
    try:
        store.submit_prediction(prediction("dup")).result(10)
        futures = [store.submit_prediction(prediction(rid)) for rid in ("x", "dup", "y")]
        futures[0].result(10)
        futures[2].result(10)
        with pytest.raises(StoreError, match="'dup' already logged"):
            futures[1].result(10)
        assert store.has_prediction("x") and not store.has_prediction("nobody")
        assert store.healthy()
    finally:
        store.close()
    assert count(store_url, "predictions") == 3


def test_a_failed_commit_is_reported_never_acknowledged(store_url):
    store = FeedbackStore(store_url)
    try:
        execute(store_url, "drop table feedback")
        with pytest.raises(StoreError, match="store write failed"):
            store.submit_feedback(FeedbackRecord("a", NOW, "sun")).result(10)
        assert not store.healthy() and "feedback" in store.error
        store.submit_prediction(prediction("ok")).result(10)  # the next good commit recovers
        assert store.healthy()
    finally:
        store.close()


def test_a_dead_writer_fails_waiters_and_refuses_more(store_url):
    store = FeedbackStore(store_url)
    store.submit_prediction(prediction("a")).result(10)
    store._proc.kill()
    store._proc.wait(10)
    deadline = time.monotonic() + 10
    while store.healthy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.healthy() and "exited" in store.error
    with pytest.raises(StoreError):
        store.submit_prediction(prediction("b")).result(10)
    store.close()


def test_personal_fields_are_hashed_or_dropped_before_storage(db, tmp_path):
    key = b"k" * 32
    store = FeedbackStore(
        f"sqlite:///{db}", personal={"wind": "hash", "temp_min": "drop"}, hash_key=key
    )
    store.submit_prediction(prediction("r1", wind=123456.789, temp_min=-98765.4321)).result(10)
    store.close()
    stored = json.loads(store_rows(f"sqlite:///{db}", "select features from predictions")[0][0])
    assert stored == {"wind": hmac.new(key, b"123456.789", hashlib.sha256).hexdigest()}
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("fb.db*"))
    for value in (123456.789, -98765.4321):
        for form in (str(value).encode(), struct.pack(">d", value), struct.pack("<d", value)):
            assert form not in raw  # as text or as a binary REAL, in the db, WAL or shm file
        with sqlite3.connect(db) as conn:
            for column in conn.execute("select * from predictions").fetchone():
                assert str(value) not in str(column)


def test_hashing_without_a_key_or_an_unknown_mode_refuses_to_start(db):
    with pytest.raises(StoreError, match=r"\['email'\] are marked hash"):
        FeedbackStore(f"sqlite:///{db}", personal={"email": "hash"})
    with pytest.raises(StoreError, match=r"personal\.email: must be hash or drop"):
        FeedbackStore(f"sqlite:///{db}", personal={"email": "mask"})


HIDE_PSYCOPG = (
    "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg2'] = None\n"
    "from closedloop.cli import main; sys.argv = ['closedloop', *sys.argv[1:]]; main()\n"
)


def test_a_missing_postgres_driver_is_one_line_naming_the_extra(tmp_path):
    """Without psycopg installed: not a ModuleNotFoundError traceback but the extra to add."""
    for url in ("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "postgresql://u@127.0.0.1:1/db"):
        proc = subprocess.run(
            [sys.executable, "-c", HIDE_PSYCOPG, "export", "--store-url", url, "--no-dvc"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "closedloop[postgres]" in lines[0] and "hunter2" not in lines[0]


def test_an_unreachable_database_is_a_store_error_without_the_password():
    """Port 1 on loopback refuses connections: the store says so, never with the secret."""
    with pytest.raises(StoreError) as failed:
        FeedbackStore("postgresql+psycopg://closedloop:hunter2@127.0.0.1:1/feedback")
    message = str(failed.value)
    assert "hunter2" not in message and "\n" not in message
    assert "127.0.0.1" in message  # the operator is told which database


WRITER = """
import datetime as dt, sys
from closedloop.capture.store import FeedbackStore, PredictionRecord
store = FeedbackStore(sys.argv[1], batch_size=32)
now = dt.datetime.now(dt.timezone.utc)
for i in range(1_000_000):
    futures = [store.submit_prediction(PredictionRecord(f"{i}-{j}", now, "v", {"x": 1.0}, "a",
               {"a": 1.0}, 0.1)) for j in range(8)]
    for j, f in enumerate(futures):
        f.result()
        print(f"{i}-{j}", flush=True)
"""


def test_sigkill_loses_nothing_acknowledged(store_url):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, store_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = [proc.stdout.readline().strip() for _ in range(400)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    acked += [line.strip() for line in proc.stdout]  # acknowledged before the kill landed
    time.sleep(1)  # the orphaned writer commits what it holds, then exits on EOF
    stored = {r[0] for r in store_rows(store_url, "select request_id from predictions")}
    assert set(acked) <= stored
