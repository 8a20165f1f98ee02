"""The feedback store: durable group commit, per-record failures, privacy, crash safety."""

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

from closedloop.capture.store import FeedbackRecord, FeedbackStore, PredictionRecord
from closedloop.errors import StoreError
from tests.conftest import ROOT

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


def query(db, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


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


def test_every_api_commits_and_close_flushes_fire_and_forget(db):
    store = FeedbackStore(f"sqlite:///{db}", batch_size=8, flush_interval_ms=10_000)
    store.submit_prediction(prediction("a")).result(10)
    assert query(db, "select count(*) from predictions") == [(1,)]  # resolved = committed

    async def concurrently():
        await asyncio.gather(*(store.persist_prediction(prediction(f"p{i}")) for i in range(300)))

    asyncio.run(concurrently())
    store.log_feedback(FeedbackRecord("a", NOW, "rain", "correct", "app"))
    store.log_prediction(prediction("late"))  # lingers: flush_interval is 10 s
    store.close()
    assert query(db, "select count(*) from predictions") == [(302,)]
    ts, features, probabilities = query(
        db, "select ts, features, probabilities from predictions where request_id = 'a'"
    )[0]
    assert ts == int(NOW.timestamp() * 1_000_000)
    assert json.loads(features) == {"wind": 4.7}
    assert json.loads(probabilities) == {"sun": 0.75, "rain": 0.25}
    assert query(db, "select request_id, label, action, source from feedback") == [
        ("a", "rain", "correct", "app")
    ]
    with pytest.raises(StoreError, match="closed"):
        store.submit_prediction(prediction("after"))


def test_a_duplicate_fails_alone_not_its_batch(db):
    store = FeedbackStore(f"sqlite:///{db}", batch_size=64)
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
    assert query(db, "select count(*) from predictions") == [(3,)]


def test_a_failed_commit_is_reported_never_acknowledged(db):
    store = FeedbackStore(f"sqlite:///{db}")
    try:
        query(db, "drop table feedback")
        with pytest.raises(StoreError, match="store write failed"):
            store.submit_feedback(FeedbackRecord("a", NOW, "sun")).result(10)
        assert not store.healthy() and "feedback" in store.error
        store.submit_prediction(prediction("ok")).result(10)  # the next good commit recovers
        assert store.healthy()
    finally:
        store.close()


def test_a_dead_writer_fails_waiters_and_refuses_more(db):
    store = FeedbackStore(f"sqlite:///{db}")
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
    stored = json.loads(query(db, "select features from predictions")[0][0])
    assert stored == {"wind": hmac.new(key, b"123456.789", hashlib.sha256).hexdigest()}
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("fb.db*"))
    for value in (123456.789, -98765.4321):
        for form in (str(value).encode(), struct.pack(">d", value), struct.pack("<d", value)):
            assert form not in raw  # as text or as a binary REAL, in the db, WAL or shm file
        for column in query(db, "select * from predictions")[0]:
            assert str(value) not in str(column)


def test_hashing_without_a_key_or_an_unknown_mode_refuses_to_start(db):
    with pytest.raises(StoreError, match=r"\['email'\] are marked hash"):
        FeedbackStore(f"sqlite:///{db}", personal={"email": "hash"})
    with pytest.raises(StoreError, match=r"personal\.email: must be hash or drop"):
        FeedbackStore(f"sqlite:///{db}", personal={"email": "mask"})


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


def test_sigkill_loses_nothing_acknowledged(db):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, f"sqlite:///{db}"],
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
    stored = {r[0] for r in query(db, "select request_id from predictions")}
    assert set(acked) <= stored
