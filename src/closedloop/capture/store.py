"""The feedback store: a logging library any serving stack can call.

Predictions and feedback go to two append-only SQL tables whose ``seq`` column orders them
for export. Writes leave the request path: callers hand records to a writer *process* that
owns the database connection and commits them in batches.

Why a process and not a thread: a request handler holds the GIL almost all the time, and a
writer thread must retake it after every database call, each retake waiting up to a thread
switch interval. Measured, that convoy cost 25-45% of throughput at concurrency 16; with the
writer in its own process logging costs a few percent (benchmarks/bench_serve.py).

Durability: ``persist_*`` (asyncio) and ``submit_*`` (a future) finish only once the record's
transaction has committed, so a server can acknowledge exactly what is durable. This is
*group commit*: the writer takes everything that has arrived, commits it in one transaction
and acknowledges it with one message, while the next group arrives. Under load many requests
share one commit (one fsync); idle, a record waits only for its own. ``log_*`` are
fire-and-forget: those records may linger up to ``flush_interval_ms`` (or until
``batch_size`` are waiting) to build larger batches; ``flush()`` waits for them.

SQLite runs in WAL mode with ``synchronous=FULL``: WAL lets readers (the exporter, the
feedback endpoint's lookups) run beside the writer, and FULL fsyncs the WAL at every commit,
so an acknowledged record survives a power cut, not only a killed process (NORMAL may lose
the last commits on power loss). Group commit keeps that fsync cheap per record. If the
serving process is killed, the writer still commits what it had received, then exits.

Privacy: feature values named in ``personal`` are replaced by HMAC-SHA256 hex ("hash") or
removed ("drop") in the caller, before the record leaves the calling thread.

Secrets: a store URL's password never reaches a message (``redact``); a database that is
down or a driver that is missing is a ``StoreError`` of one line, never a traceback.
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
import marshal
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
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
    inspect,
    select,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from closedloop.capture.rules import ACTIONS
from closedloop.errors import StoreError

log = logging.getLogger("closedloop.store")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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
    # A rollout's columns (closedloop.rollout.records), null when no rollout is on.
    error: str | None = None  # why the assigned model did not answer (the champion did)
    arm: str | None = None  # champion | candidate: the arm the request was assigned
    share: float | None = None  # the candidate's share in force (0 in shadow mode)
    shadow_prediction: str | None = None  # the other model, run on the same request
    shadow_latency_ms: float | None = None
    shadow_error: str | None = None  # why the other model gave no prediction


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
    # A rollout's columns, added later: nullable, and added to older stores by migrate().
    Column("error", String(256)),
    Column("arm", String(16)),
    Column("share", Float),
    Column("shadow_prediction", String(128)),
    Column("shadow_latency_ms", Float),
    Column("shadow_error", String(256)),
    sqlite_autoincrement=True,  # seq is never reused, even after deletes: the export relies on it
)
ADDED = {
    "predictions": (
        "error",
        "arm",
        "share",
        "shadow_prediction",
        "shadow_latency_ms",
        "shadow_error",
    )
}
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


STORE_META = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)


def migrate(engine: Engine) -> list[str]:
    """Add the columns a store made by an older closedloop lacks; return the ones added.

    Only nullable columns are ever added (``ADDED``), so old rows stay valid and read as null.
    Two servers starting together may race: a column the other one added first is fine.
    """
    added = []
    for table_name, names in ADDED.items():
        table = metadata.tables[table_name]
        have = {c["name"] for c in inspect(engine).get_columns(table_name)}
        for name in names:
            if name in have:
                continue
            column = table.c[name]
            kind = column.type.compile(dialect=engine.dialect)
            sql = f"ALTER TABLE {table_name} ADD COLUMN {name} {kind}"
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(sql)
            except SQLAlchemyError:
                if name not in {c["name"] for c in inspect(engine).get_columns(table_name)}:
                    raise
                continue  # another process added it first
            added.append(f"{table_name}.{name}")
    if added:
        log.warning("store: added column(s) %s to an older store", ", ".join(added))
    return added


def store_id(engine: Engine) -> str:
    """This store's identity, made once when its tables are created.

    Export remembers it beside its watermark: a store that was deleted and recreated starts
    its seq at 1 again, and without the identity its first records would sit below the old
    watermark and never be exported.
    """
    STORE_META.create(engine, checkfirst=True)  # stores made before it existed get one too
    query = select(STORE_META.c.value).where(STORE_META.c.key == "store_id")
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        with contextlib.suppress(IntegrityError), engine.begin() as conn:  # another won the race
            conn.execute(insert(STORE_META).values(key="store_id", value=uuid.uuid4().hex))
        with engine.connect() as conn:
            found = conn.execute(query).scalar()
    return found


POSTGRES_EXTRA = "pip install 'closedloop[postgres]'"  # psycopg, the driver closedloop ships


def redact(url: str | URL) -> str:
    """A store URL fit for a message: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<a store URL that does not parse>"


def database_error(e: BaseException, url: str | URL) -> StoreError:
    """A database failure as one line naming the store, with no password in it."""
    orig = getattr(e, "orig", None) or e
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return StoreError(f"store {redact(url)}: {text[:300]}")


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"store URL {redact(url)}: not a database URL "
            "(e.g. sqlite:///feedback.db or postgresql+psycopg://user@host/db)"
        ) from None
    # A bare postgresql:// means psycopg2 to SQLAlchemy; the postgres extra ships psycopg 3.
    return (
        parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed
    )


def open_engine(url: str | URL, create: bool = True) -> Engine:
    """An engine for ``url``; SQLite files get WAL, synchronous=FULL and a busy timeout.

    With ``create`` the tables are made (and the database reached) at once: a database that
    is down, a missing driver or a bad URL is a StoreError of one line.
    """
    parsed = _parse(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}  # a dead host fails, never hangs
    try:
        engine = create_engine(parsed, **kwargs)
    except ImportError as e:
        hint = POSTGRES_EXTRA if parsed.get_backend_name() == "postgresql" else "install it"
        raise StoreError(
            f"store {redact(parsed)}: its database driver is not installed ({e.name or e}): {hint}"
        ) from None
    except NoSuchModuleError:
        raise StoreError(
            f"store {redact(parsed)}: unknown database {parsed.drivername!r} "
            "(e.g. sqlite:///feedback.db or postgresql+psycopg://user@host/db)"
        ) from None
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            path = Path(database)
            if not create and not path.exists():
                raise StoreError(f"store {redact(parsed)}: {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    if create:
        try:
            metadata.create_all(engine)
            migrate(engine)
            store_id(engine)
        except SQLAlchemyError as e:
            engine.dispose()
            raise database_error(e, parsed) from None
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


# ------------------------------------------------------------------ wire format
# Two pipes, framed by multiprocessing.connection (send_bytes/recv_bytes: a length header and
# the bytes, one write for a small message); the payloads are marshal'd tuples of plain values.
# Measured against the hand-written framing it replaced: about 4 us more caller CPU per
# record (73 vs 69), under half a percent of a served request.
# Caller -> writer: a config dict, then one message of entries (ticket, kind, row, waited) per
# hand-over; EOF = stop. Writer -> caller: ("ready",) or ("failed", why) once, then
# ("ok", last) = every ticket <= last not failed is committed, ("err", first, last, message) =
# tickets first..last are not stored.
COLUMNS = {
    kind: tuple(c.name for c in table.columns if c.name != "seq")
    for kind, table in (("p", PREDICTIONS), ("f", FEEDBACK))
}
TABLES = {"p": PREDICTIONS, "f": FEEDBACK}
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # src/, for a writer started outside an install


def _send(conn: Connection, obj: Any) -> None:
    conn.send_bytes(marshal.dumps(obj))


def _recv(conn: Connection) -> Any:
    """The next message; EOFError once the other side has closed its end."""
    return marshal.loads(conn.recv_bytes())


# -------------------------------------------------------------------------- store
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
        self.url = redact(url)  # for logs and messages
        self.engine = open_engine(url)  # creates the tables; also serves has_prediction
        self._capacity = batch_size * 64  # records in flight at most: beyond, StoreError (503)
        self._lock = threading.Lock()
        self._next = 0  # last ticket handed to the writer
        self._acked = 0  # last ticket the writer has answered for
        self._waiters: collections.deque = collections.deque()  # (ticket, future, loop)
        self._gathering: dict[asyncio.AbstractEventLoop, list] = {}
        self._reader_thread: threading.Thread | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._gone: str | None = None  # why the writer is no longer there
        self._error: str | None = None
        self._tx, self._rx, self._proc = self._start_writer(url, batch_size, flush_interval_ms)

    # ------------------------------------------------------------------ public API
    def log_prediction(self, record: PredictionRecord) -> None:
        """Hand a prediction to the writer; committed within flush_interval_ms (flush() waits)."""
        self._send([("p", self._prediction_row(record), None)])

    def log_feedback(self, record: FeedbackRecord) -> None:
        """Hand feedback to the writer; committed within flush_interval_ms (flush() waits)."""
        self._send([("f", _feedback_row(record), None)])

    def submit_prediction(self, record: PredictionRecord) -> Future:
        """Hand a prediction over; the future resolves once it is committed, or fails with why."""
        future: Future = Future()
        self._send([("p", self._prediction_row(record), future)])
        return future

    def submit_feedback(self, record: FeedbackRecord) -> Future:
        """Hand feedback over; the future resolves once it is committed, or fails with why."""
        future: Future = Future()
        self._send([("f", _feedback_row(record), future)])
        return future

    async def persist_prediction(self, record: PredictionRecord) -> None:
        """Return once the prediction is committed; raise StoreError if it cannot be.

        The asyncio form, cheapest per request: the records of one event-loop iteration go
        to the writer in one write, and its acknowledgements are read by the loop itself.
        """
        await self._persist("p", self._prediction_row(record))

    async def persist_feedback(self, record: FeedbackRecord) -> None:
        """Return once the feedback is committed; raise StoreError if it cannot be."""
        await self._persist("f", _feedback_row(record))

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until everything handed over before this call is committed."""
        future: Future = Future()
        self._send([("flush", None, future)])
        self._wait_here(future, timeout)
        future.result(timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Commit everything handed over, stop the writer and release the database."""
        for loop in list(self._gathering):
            self._hand_over(loop)
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._tx.close()  # EOF: the writer commits what it has, answers, and exits
        self._stop_loop_reader()
        if self._reader_thread is not None:
            self._reader_thread.join(timeout)
        else:
            self._read_until_eof()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._rx.close()
        self.engine.dispose()

    def healthy(self) -> bool:
        """True while the writer runs and its last transaction committed."""
        return not self._closed and self._gone is None and self._error is None

    @property
    def pending(self) -> int:
        """Records handed over (or about to be) and not yet committed."""
        return self._next - self._acked + sum(map(len, self._gathering.values()))

    @property
    def error(self) -> str | None:
        """Why the writer is gone or its last transaction failed; None when all is well."""
        return self._gone or self._error

    def has_prediction(self, request_id: str) -> bool:
        """Whether a prediction with this id is committed (feedback must refer to one).

        StoreError when the database cannot be asked: the server's 503, never a 500.
        """
        stmt = select(PREDICTIONS.c.seq).where(PREDICTIONS.c.request_id == request_id).limit(1)
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).first() is not None
        except SQLAlchemyError as e:
            raise database_error(e, self.engine.url) from None

    def ping(self) -> bool:
        """Whether the database answers now (the health check asks it, not only the writer)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as e:
            log.error("%s", database_error(e, self.engine.url))
            return False
        return True

    # ------------------------------------------------------------ the caller's side
    def _prediction_row(self, r: PredictionRecord) -> tuple:
        return (
            r.request_id,
            to_micros(r.ts),
            r.model_version,
            r.event_time,
            _json(self._private(r.features)),
            r.prediction,
            _json(r.probabilities),
            float(r.latency_ms),
            r.error,
            r.arm,
            None if r.share is None else float(r.share),
            r.shadow_prediction,
            None if r.shadow_latency_ms is None else float(r.shadow_latency_ms),
            r.shadow_error,
        )

    def _private(self, features: dict[str, Any]) -> dict[str, Any]:
        """Hash or drop personal fields before anything leaves the caller."""
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

    async def _persist(self, kind: str, row: tuple) -> None:
        loop = asyncio.get_running_loop()
        if self._reader_loop is None and self._reader_thread is None:
            self._attach(loop)
        future = loop.create_future()
        gathering = self._gathering.get(loop)
        if gathering is None:
            if self._closed:
                raise StoreError("store is closed")
            gathering = self._gathering[loop] = []
            loop.call_soon(self._hand_over, loop)
        gathering.append((kind, row, future))
        await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send one loop iteration's records in one write."""
        entries = self._gathering.pop(loop, None)
        if not entries:
            return
        try:
            self._send(entries)
        except StoreError as e:
            for _, _, future in entries:
                if not future.done():
                    future.set_exception(StoreError(str(e)))

    def _send(self, entries: list) -> None:
        """Number the entries, register their waiters and write them to the writer."""
        if self._reader_loop is None and self._reader_thread is None:
            self._start_reader_thread()
        with self._lock:
            if self._closed or self._gone:
                raise StoreError(self._gone or "store is closed")
            if self._next - self._acked + len(entries) > self._capacity:
                raise StoreError(f"store full ({self._next - self._acked} records in flight)")
            wire = []
            for kind, row, future in entries:
                self._next += 1
                wire.append((self._next, kind, row, future is not None))
                if future is not None:
                    loop = future.get_loop() if isinstance(future, asyncio.Future) else None
                    self._waiters.append((self._next, future, loop))
            try:
                _send(self._tx, wire)
            except OSError as e:
                self._gone = f"store writer is gone ({e.strerror or e})"
                raise StoreError(self._gone) from None

    def _wait_here(self, future: Future, timeout: float | None) -> None:
        """Read acknowledgements in this thread if it runs the loop that normally reads them."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is not self._reader_loop:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while not future.done():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                return
            if self._rx.poll(left):
                self._read_ready()

    # ---------------------------------------------------------- acknowledgements
    def _start_writer(self, url: str, batch_size: int, flush_interval_ms: int):
        """Start the writer process; the URL (with its password) goes over the pipe, not argv."""
        to_writer_r, to_writer_w = os.pipe()
        from_writer_r, from_writer_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")])
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "closedloop.capture.store",
                str(to_writer_r),
                str(from_writer_w),
            ],
            pass_fds=(to_writer_r, from_writer_w),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        os.close(to_writer_r)
        os.close(from_writer_w)
        tx = Connection(to_writer_w, readable=False)
        rx = Connection(from_writer_r, writable=False)
        config = {"url": url, "batch_size": batch_size, "flush_interval": flush_interval_ms / 1000}
        try:
            _send(tx, config)
            ready = _recv(rx)
        except (OSError, EOFError):
            ready = ("failed", f"exit code {proc.wait()}")
        if ready != ("ready",):
            proc.kill()
            tx.close()
            rx.close()
            raise StoreError(f"store writer for {self.url} did not start: {ready[-1]}")
        return tx, rx, proc

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let this event loop read the acknowledgements: no thread has to wake it.

        The pipe stays blocking: the loop is called only when a message has arrived, and
        the writer sends each acknowledgement (a few bytes) in one write.
        """
        self._reader_loop = loop
        loop.add_reader(self._rx.fileno(), self._read_ready)

    def _start_reader_thread(self) -> None:
        with self._lock:
            if self._reader_thread is not None or self._reader_loop is not None:
                return
            self._reader_thread = threading.Thread(
                target=self._read_until_eof, name="feedback-store-acks", daemon=True
            )
            self._reader_thread.start()

    def _read_ready(self) -> None:
        """Read every acknowledgement that has arrived, without waiting for more."""
        messages = []
        try:
            while self._rx.poll():
                messages.append(_recv(self._rx))
        except (EOFError, OSError):
            self._acknowledge(messages)
            if self._reader_loop is not None:
                self._reader_loop.remove_reader(self._rx.fileno())
            self._writer_gone()
            return
        self._acknowledge(messages)

    def _read_until_eof(self) -> None:
        while True:
            try:
                message = _recv(self._rx)
            except (EOFError, OSError):
                break
            self._acknowledge([message])
        self._writer_gone()

    def _stop_loop_reader(self) -> None:
        """Take reading back from the event loop, so close() can read to the end itself."""
        loop = self._reader_loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        fd = self._rx.fileno()
        if running is loop or not loop.is_running():
            loop.remove_reader(fd)
        else:
            done = threading.Event()
            loop.call_soon_threadsafe(lambda: (loop.remove_reader(fd), done.set()))
            done.wait(10)

    def _writer_gone(self) -> None:
        code = self._proc.poll()
        with self._lock:
            waiters, self._waiters = list(self._waiters), collections.deque()
            if not self._closed:
                self._gone = f"store writer exited (code {code})"
        _settle([(f, loop, self._gone or "store is closed") for _, f, loop in waiters])

    def _acknowledge(self, messages: list) -> None:
        """Settle the waiters the writer has answered for."""
        done = []
        with self._lock:
            for message in messages:
                if message[0] == "ok":
                    last, failed, text = message[1], 0, None
                    self._error = None
                else:
                    _, failed, last, text = message
                    self._error = text
                    log.error("%s (tickets %d-%d not stored)", text, failed, last)
                while self._waiters and self._waiters[0][0] <= last:
                    ticket, future, loop = self._waiters.popleft()
                    done.append((future, loop, text if failed and ticket >= failed else None))
                self._acked = max(self._acked, last)
        _settle(done)


def _settle(done: list) -> None:
    """Resolve or fail waiters: loop futures in one call into each loop, others directly."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for future, loop, error in done:
        if loop is None or loop is here:
            _resolve(future, error)
        else:
            by_loop.setdefault(loop, []).append((future, error))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while its requests waited
            loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(items: list) -> None:
    for future, error in items:
        _resolve(future, error)


def _resolve(future, error: str | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(StoreError(error))


# ----------------------------------------------------------------- the writer process
def _writer_main(in_fd: int, out_fd: int) -> None:
    """Commit what the caller sends, in batches, and answer for every ticket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM go to the server, which
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # closes the pipe: then commit and exit
    logging.basicConfig(level=logging.WARNING, format="store writer: %(message)s")
    rx = Connection(in_fd, writable=False)
    tx = Connection(out_fd, readable=False)
    try:
        config = _recv(rx)
    except EOFError:
        return
    try:
        engine = open_engine(config["url"], create=False)
    except StoreError as e:  # one line back to the caller, not a traceback on its stderr
        _send(tx, ("failed", str(e)))
        return
    writer = _Writer(engine, tx)
    _send(tx, ("ready",))
    inbox = _Inbox(config["batch_size"], config["flush_interval"])

    def read() -> None:
        while True:
            try:
                inbox.put(_recv(rx))
            except (EOFError, OSError):
                break
        inbox.close()

    threading.Thread(target=read, name="inbox", daemon=True).start()
    while (batch := inbox.take()) is not None:
        writer.write(batch)
    engine.dispose()


class _Inbox:
    """Entries received and not yet written; hands out batches for group commit."""

    def __init__(self, batch_size: int, interval: float):
        self.batch_size, self.interval = batch_size, interval
        self.entries: collections.deque = collections.deque()
        self.waited = 0  # entries someone waits on: commit them without lingering
        self.closed = False
        self.cond = threading.Condition()

    def put(self, entries: list) -> None:
        with self.cond:
            self.entries.extend(entries)
            self.waited += sum(e[3] for e in entries)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def take(self) -> list | None:
        """The next batch: at once when someone waits, else after the interval or batch_size."""
        with self.cond:
            while not self.entries and not self.closed:
                self.cond.wait()
            if not self.entries:
                return None
            deadline = time.monotonic() + self.interval
            while len(self.entries) < self.batch_size and not self.waited and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            n = min(len(self.entries), self.batch_size)
            batch = [self.entries.popleft() for _ in range(n)]
            self.waited -= sum(e[3] for e in batch)
            return batch


class _Writer:
    def __init__(self, engine: Engine, out: Connection):
        self.engine, self.out = engine, out
        self.conn = None  # reopened after a failure

    def write(self, batch: list) -> None:
        first, last = batch[0][0], batch[-1][0]
        records = [e for e in batch if e[1] in TABLES]
        try:
            self._execute(records)
        except IntegrityError:
            # One duplicate request_id must not sink the records that share its batch.
            for ticket, kind, row, _ in records:
                try:
                    self._execute([(ticket, kind, row, False)])
                except IntegrityError:
                    self._answer(("err", ticket, ticket, f"request_id {row[0]!r} already logged"))
                except Exception as e:
                    self._answer(("err", ticket, ticket, self._failure(e)))
        except Exception as e:
            log.error("%s (%d record(s) not stored)", self._failure(e), len(records))
            self._answer(("err", first, last, self._failure(e)))
            return
        self._answer(("ok", last))

    def _execute(self, records: list) -> None:
        if not records:
            return
        if self.conn is None:
            self.conn = self.engine.connect()
        try:
            with self.conn.begin():
                for kind, table in TABLES.items():
                    rows = [e[2] for e in records if e[1] == kind]
                    for start in range(0, len(rows), ROWS_PER_STATEMENT):
                        self._insert(table, kind, rows[start : start + ROWS_PER_STATEMENT])
        except IntegrityError:
            raise
        except Exception:
            self.conn.close()
            self.conn = None
            raise

    def _insert(self, table: Table, kind: str, rows: list) -> None:
        sql, names, positional = _insert_sql(self.engine.dialect, table, len(rows))
        columns = COLUMNS[kind]
        values = {
            f"{c}_m{i}": v for i, row in enumerate(rows) for c, v in zip(columns, row, strict=True)
        }
        params = tuple(values[n] for n in names) if positional else values
        self.conn.exec_driver_sql(sql, params)

    def _failure(self, e: Exception) -> str:
        """One line saying why a write failed, without the store's password."""
        text = str(database_error(e, self.engine.url)).split(": ", 1)[1]
        return f"store write failed: {text}"

    def _answer(self, message: tuple) -> None:
        with contextlib.suppress(OSError):  # the caller is gone: the commit still stands
            _send(self.out, message)


def _json(obj: Any) -> str:
    """Compact JSON, written by orjson on the server's hot path (2 us for 64 features against
    the standard library's 14). NaN and infinity become null, a missing value, as pandas
    reads them (the server refuses them before they get here); what orjson cannot write (a
    65-bit integer) goes to the standard library."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _feedback_row(r: FeedbackRecord) -> tuple:
    if r.action is not None and r.action not in ACTIONS:
        raise ValueError(f"action: must be one of {', '.join(ACTIONS)}, got {r.action!r}")
    return (r.request_id, to_micros(r.ts), r.label, r.action, r.source)


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

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


if __name__ == "__main__":
    _writer_main(int(sys.argv[1]), int(sys.argv[2]))
