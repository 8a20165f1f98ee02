"""The feedback store: a logging library any serving stack can call.

Predictions and feedback go to two append-only SQL tables whose ``seq`` column orders them
for export. Writes leave the request path: callers enqueue, one writer thread commits.

Durability: ``submit_prediction``/``submit_feedback`` return a future that resolves only once
the record's transaction has committed, so a server can acknowledge exactly what is durable.
Callers that wait are served by *group commit*: the writer takes everything queued, commits it
in one transaction, resolves all its futures, and meanwhile the next group queues up. Under
load many requests share one commit (one fsync); idle, a record waits only for its own.
``log_prediction``/``log_feedback`` are fire-and-forget: those records linger up to
``flush_interval_ms`` (or until ``batch_size`` are queued) to build larger batches.

SQLite runs in WAL mode with ``synchronous=FULL``: WAL lets readers (the exporter, the
feedback endpoint's lookups) run beside the writer, and FULL fsyncs the WAL at every commit,
so an acknowledged record survives a power cut, not only a killed process (NORMAL may lose
the last commits on power loss). Group commit keeps that fsync cheap per record.

Privacy: feature values named in ``personal`` are replaced by HMAC-SHA256 hex ("hash") or
removed ("drop") in the caller's thread, before the record reaches the queue or the database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

log = logging.getLogger("closedloop.store")

ACTIONS = ("accept", "correct", "reject")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class StoreError(RuntimeError):
    """The store could not take or commit a record: one line naming the cause."""


@dataclass(slots=True)
class PredictionRecord:
    request_id: str
    ts: dt.datetime  # UTC, timezone-aware
    model_version: str
    features: dict[str, Any]
    prediction: str
    probabilities: dict[str, float]
    latency_ms: float
    event_time: str | None = None


@dataclass(slots=True)
class FeedbackRecord:
    request_id: str
    ts: dt.datetime  # UTC, timezone-aware
    label: str | None = None
    action: str | None = None  # accept | correct | reject
    source: str = "api"


# ------------------------------------------------------------------------- tables
# seq: BIGINT on server databases, but SQLite needs exactly INTEGER PRIMARY KEY to alias rowid.
SEQ = BigInteger().with_variant(Integer, "sqlite")
metadata = MetaData()
PREDICTIONS = Table(
    "predictions",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("ts", BigInteger, nullable=False),  # UTC microseconds: exact, portable, cheap to export
    Column("model_version", String(128), nullable=False),
    Column("event_time", String(64)),
    Column("features", Text, nullable=False),  # JSON object, personal fields hashed or dropped
    Column("prediction", String(128), nullable=False),
    Column("probabilities", Text, nullable=False),  # JSON object class -> probability
    Column("latency_ms", Float, nullable=False),
    sqlite_autoincrement=True,  # seq is never reused, even after deletes: the export relies on it
)
FEEDBACK = Table(
    "feedback",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("ts", BigInteger, nullable=False),
    Column("label", String(128)),
    Column("action", String(16)),
    Column("source", String(64), nullable=False),
    sqlite_autoincrement=True,
)


def open_engine(url: str, create: bool = True) -> Engine:
    """An engine for ``url``; SQLite files get WAL, synchronous=FULL and a busy timeout."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            path = Path(database)
            if not create and not path.exists():
                raise StoreError(f"store {url}: {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    if create:
        metadata.create_all(engine)
    return engine


ROWS_PER_STATEMENT = 128  # keeps a statement's bind parameters under every database's limit


@functools.lru_cache(maxsize=512)
def _insert_sql(dialect, table: Table, n: int) -> tuple[str, tuple[str, ...], bool]:
    """A multi-row INSERT for n rows, compiled once per size by SQLAlchemy for this database.

    One statement per batch, not one per row: each row executed separately would release and
    retake the GIL that the request handlers hold most of the time, and every retake can wait
    a whole thread switch interval.
    """
    columns = [c.name for c in table.columns if c.name != "seq"]
    stmt = insert(table).values([dict.fromkeys(columns)] * n)
    compiled = stmt.compile(dialect=dialect)
    names = tuple(compiled.positiontup) if compiled.positional else tuple(compiled.params)
    return str(compiled), names, compiled.positional


def to_micros(ts: dt.datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the Unix epoch (UTC)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} is naive: give a timezone-aware UTC time")
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -------------------------------------------------------------------------- store
@dataclass
class _Item:
    table: Table | None  # None: a flush marker
    row: dict | None
    future: Future | asyncio.Future | None = None  # None: fire-and-forget
    loop: asyncio.AbstractEventLoop | None = None  # set when future is an asyncio future


class FeedbackStore:
    """Batched, durable logging of predictions and feedback into a SQL database."""

    def __init__(
        self,
        url: str,
        batch_size: int = 256,
        flush_interval_ms: int = 50,
        personal: dict[str, str] | None = None,
        hash_key: bytes | None = None,
    ):
        self.personal = dict(personal or {})
        bad = {k: v for k, v in self.personal.items() if v not in ("hash", "drop")}
        if bad:
            name, how = next(iter(bad.items()))
            raise StoreError(f"personal.{name}: must be hash or drop, got {how!r}")
        hashed = sorted(k for k, v in self.personal.items() if v == "hash")
        if hashed and not hash_key:
            raise StoreError(
                f"personal field(s) {hashed} are marked hash but no hash key was given"
            )
        self._key = hash_key
        self.engine = open_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)  # for logs
        self._batch_size = batch_size
        self._interval = flush_interval_ms / 1000
        self._capacity = batch_size * 64  # records queued at most: beyond, callers wait or 503
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._queue: collections.deque[_Item] = collections.deque()
        self._waited = 0  # queued records someone waits on: commit them without lingering
        self._inflight = 0
        self._closed = False
        self._error: str | None = None
        self._conn = None  # the writer thread's connection, reopened after a failure
        self._thread = threading.Thread(target=self._run, name="feedback-store", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def log_prediction(self, record: PredictionRecord) -> None:
        """Queue a prediction; it is committed within flush_interval_ms (use flush() to wait)."""
        self._put([_Item(PREDICTIONS, self._prediction_row(record))], block=True)

    def log_feedback(self, record: FeedbackRecord) -> None:
        """Queue feedback; it is committed within flush_interval_ms (use flush() to wait)."""
        self._put([_Item(FEEDBACK, _feedback_row(record))], block=True)

    def submit_prediction(self, record: PredictionRecord) -> Future:
        """Queue a prediction; the future resolves once it is committed, or fails with why."""
        return self._submit(PREDICTIONS, self._prediction_row(record))

    def submit_feedback(self, record: FeedbackRecord) -> Future:
        """Queue feedback; the future resolves once it is committed, or fails with why."""
        return self._submit(FEEDBACK, _feedback_row(record))

    async def persist_prediction(self, record: PredictionRecord) -> None:
        """Return once the prediction is committed; raise StoreError if it cannot be.

        The asyncio form of submit_prediction, cheaper per request: the waiters of a batch
        are woken together, with one call into their event loop.
        """
        await self._persist(PREDICTIONS, self._prediction_row(record))

    async def persist_feedback(self, record: FeedbackRecord) -> None:
        """Return once the feedback is committed; raise StoreError if it cannot be."""
        await self._persist(FEEDBACK, _feedback_row(record))

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until everything queued before this call is committed."""
        future: Future = Future()
        self._put([_Item(None, None, future)], block=True)
        future.result(timeout)

    def close(self) -> None:
        """Commit everything queued, stop the writer and release the database."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._has_items.notify()
            self._has_room.notify_all()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()
        self.engine.dispose()

    def healthy(self) -> bool:
        """True while the writer runs and its last transaction committed."""
        return not self._closed and self._thread.is_alive() and self._error is None

    @property
    def pending(self) -> int:
        """Records queued or being written, not yet committed."""
        return len(self._queue) + self._inflight

    @property
    def error(self) -> str | None:
        """Why the last transaction failed, or None when it committed."""
        return self._error

    def has_prediction(self, request_id: str) -> bool:
        """Whether a prediction with this id is committed (feedback must refer to one)."""
        stmt = select(PREDICTIONS.c.seq).where(PREDICTIONS.c.request_id == request_id).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    # ------------------------------------------------------------ the caller's side
    def _prediction_row(self, r: PredictionRecord) -> dict:
        return {
            "request_id": r.request_id,
            "ts": to_micros(r.ts),
            "model_version": r.model_version,
            "event_time": r.event_time,
            "features": _json(self._private(r.features)),
            "prediction": r.prediction,
            "probabilities": _json(r.probabilities),
            "latency_ms": float(r.latency_ms),
        }

    def _private(self, features: dict[str, Any]) -> dict[str, Any]:
        """Hash or drop personal fields before anything is queued or written."""
        if not self.personal:
            return features
        out = {}
        for name, value in features.items():
            how = self.personal.get(name)
            if how == "drop":
                continue
            if how == "hash":
                text = value if isinstance(value, str) else json.dumps(value)
                value = hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
            out[name] = value
        return out

    def _submit(self, table: Table, row: dict) -> Future:
        future: Future = Future()
        self._put([_Item(table, row, future)], block=False)
        return future

    async def _persist(self, table: Table, row: dict) -> None:
        loop = asyncio.get_running_loop()
        item = _Item(table, row, loop.create_future(), loop)
        self._put([item], block=False)
        await item.future

    def _put(self, items: list[_Item], block: bool) -> None:
        with self._lock:
            while not self._closed and len(self._queue) + len(items) > self._capacity:
                if not block:
                    raise StoreError(f"store queue full ({len(self._queue)} records waiting)")
                self._has_room.wait()
            if self._closed:
                raise StoreError("store is closed")
            self._queue.extend(items)
            self._waited += sum(i.future is not None for i in items)
            self._has_items.notify()

    # ----------------------------------------------------------- the writer thread
    def _take(self) -> list[_Item] | None:
        """The next batch: at once when someone waits, else after flush_interval or batch_size."""
        with self._lock:
            while not self._queue and not self._closed:
                self._has_items.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = time.monotonic() + self._interval
            while len(self._queue) < self._batch_size and not self._waited and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._has_items.wait(remaining)
            n = min(len(self._queue), self._batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._waited -= sum(i.future is not None for i in batch)
            self._inflight = n
            self._has_room.notify_all()
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self._write(batch)
            self._inflight = 0

    def _execute(self, items: list[_Item]) -> None:
        """Insert the items' rows in one transaction on the writer's connection."""
        if self._conn is None:
            self._conn = self.engine.connect()
        try:
            with self._conn.begin():
                for table in (PREDICTIONS, FEEDBACK):
                    rows = [i.row for i in items if i.table is table]
                    for start in range(0, len(rows), ROWS_PER_STATEMENT):
                        self._insert(table, rows[start : start + ROWS_PER_STATEMENT])
        except IntegrityError:
            raise
        except Exception:
            self._conn.close()  # a broken connection is replaced on the next batch
            self._conn = None
            raise

    def _insert(self, table: Table, rows: list[dict]) -> None:
        sql, names, positional = _insert_sql(self.engine.dialect, table, len(rows))
        values = {f"{k}_m{i}": v for i, row in enumerate(rows) for k, v in row.items()}
        params = tuple(values[n] for n in names) if positional else values
        self._conn.exec_driver_sql(sql, params)

    def _write(self, batch: list[_Item]) -> None:
        records = [i for i in batch if i.table is not None]
        try:
            if records:
                self._execute(records)
        except IntegrityError:
            # One duplicate request_id must not sink the records that share its batch.
            self._write_one_by_one(batch)
            return
        except Exception as e:
            self._fail(batch, e)
            return
        self._error = None
        _settle(batch)

    def _write_one_by_one(self, batch: list[_Item]) -> None:
        done = []
        for item in batch:
            try:
                if item.table is not None:
                    self._execute([item])
            except IntegrityError:
                _settle([item], f"request_id {item.row['request_id']!r} already logged")
            except Exception as e:
                self._fail([item], e)
            else:
                self._error = None
                done.append(item)
        _settle(done)

    def _fail(self, batch: list[_Item], e: Exception) -> None:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        self._error = f"store write failed: {first_line}"
        log.error("%s (%d record(s) not stored)", self._error, len(batch))
        _settle(batch, self._error)


def _json(obj: Any) -> str:
    """Compact, strict JSON: NaN or infinity in a record is a bug, not a value to keep."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _feedback_row(r: FeedbackRecord) -> dict:
    if r.action is not None and r.action not in ACTIONS:
        raise ValueError(f"action: must be one of {', '.join(ACTIONS)}, got {r.action!r}")
    return {
        "request_id": r.request_id,
        "ts": to_micros(r.ts),
        "label": r.label,
        "action": r.action,
        "source": r.source,
    }


def _settle(batch: list[_Item], error: str | None = None) -> None:
    """Resolve the waiters of a batch (or fail them with ``error``): one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for item in batch:
        if item.loop is not None:
            by_loop.setdefault(item.loop, []).append(item.future)
        elif item.future is not None and not item.future.done():
            if error is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(StoreError(error))
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while its requests waited
            loop.call_soon_threadsafe(_settle_async, futures, error)


def _settle_async(futures: list[asyncio.Future], error: str | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(StoreError(error))


class NullStore:
    """A store that keeps nothing: the baseline that measures what logging costs."""

    url = "null://"
    pending = 0
    error = None

    def submit_prediction(self, record: PredictionRecord) -> Future:
        future: Future = Future()
        future.set_result(None)
        return future

    submit_feedback = submit_prediction

    async def persist_prediction(self, record: PredictionRecord) -> None:
        pass

    persist_feedback = persist_prediction

    def has_prediction(self, request_id: str) -> bool:
        return False

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass
