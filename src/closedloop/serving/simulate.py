"""Replay the production period through the prediction server, as live traffic would arrive.

Each row of artifacts/snapshot/production.parquet becomes one POST /predict, with the row's
date as event_time. For a seeded fraction of the answered predictions the true label comes
back later as POST /feedback (action "accept" when the prediction was right, "correct" when
it was wrong, source "simulator"). Bounded: at most --limit requests and --max-seconds.

    closedloop simulate [--url http://127.0.0.1:8000] [--rate 200] [--limit N]
        [--concurrency 16] [--feedback-coverage 0.9] [--feedback-delay 0.0]
        [--start 2014-01-01 --end 2014-12-31] [--seed 0] [--max-seconds 600] [--token T]
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

from closedloop.data.snapshot import read_schema, read_split
from closedloop.errors import DataError
from closedloop.paths import SNAPSHOT_DIR


@dataclass
class Replay:
    """One request to send: the features, the event time and the true label."""

    features: dict[str, float]
    event_time: str | None
    label: str | float  # a class, or a regressor's true value


@dataclass
class Summary:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    feedback_sent: int = 0
    feedback_ok: int = 0
    seconds: float = 0.0
    acked: list[str] = field(default_factory=list)  # request ids answered 2xx
    feedback_acked: list[str] = field(default_factory=list)  # ids whose feedback got 2xx
    first_error: str | None = None

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        text = (
            f"simulate: {self.sent} predictions sent, {self.ok} ok, {self.errors} errors; "
            f"feedback {self.feedback_sent} sent, {self.feedback_ok} ok; "
            f"{self.seconds:.1f}s ({rate:.0f} req/s)"
        )
        return text + (f"; first error: {self.first_error}" if self.first_error else "")


def production_rows(
    snapshot: Path = SNAPSHOT_DIR, start: str | None = None, end: str | None = None
) -> list[Replay]:
    """The production split's rows between start and end (inclusive dates), in time order."""
    schema = read_schema(snapshot)
    df = read_split("production", snapshot)
    time_column = schema.time_column
    if (start or end) and not time_column:
        raise DataError(f"dataset {schema.dataset}: has no time column to filter by --start/--end")
    if time_column:
        t = pd.to_datetime(df[time_column])
        mask = (t >= pd.Timestamp(start or t.min())) & (t <= pd.Timestamp(end or t.max()))
        df = df.loc[mask].sort_values(time_column, kind="stable")
    if df.empty:
        raise DataError(f"production split: no rows between {start} and {end}")
    # Numbers as numbers and categories as text, a missing value as null (JSON has no NaN).
    numeric, categorical = schema.feature_types.numeric, schema.feature_types.categorical
    table = df[numeric].astype(float).astype(object).where(df[numeric].notna(), None)
    table[categorical] = df[categorical].astype(object).where(df[categorical].notna(), None)
    x = table[schema.features].to_dict("records")
    # A regressor's true value goes back as a JSON number; a class as its label.
    labels = df[schema.target].astype(float if schema.task == "regression" else str).tolist()
    times = (
        pd.to_datetime(df[time_column]).dt.date.map(lambda d: d.isoformat()).tolist()
        if time_column
        else [None] * len(df)
    )
    return [Replay(f, e, y) for f, e, y in zip(x, times, labels, strict=True)]


async def replay(
    url: str,
    rows: list[Replay],
    limit: int | None = None,
    concurrency: int = 16,
    rate: float = 0.0,
    feedback_coverage: float = 0.5,
    feedback_delay: float = 0.0,
    seed: int = 0,
    max_seconds: float = 600.0,
    max_errors: int = 100,
    summary: Summary | None = None,
    token: str | None = None,
) -> Summary:
    """Send ``limit`` predictions (cycling through ``rows``) and feedback for a seeded sample.

    ``rate`` caps requests per second (0: as fast as ``concurrency`` allows). Sending stops at
    ``max_seconds`` or after ``max_errors`` failed requests. ``summary`` is filled as it goes,
    so a caller in another thread can watch progress. ``token``: the bearer token to send.
    """
    s = summary if summary is not None else Summary()
    limit = len(rows) if limit is None else limit
    rng = random.Random(seed)
    wants_feedback = [rng.random() < feedback_coverage for _ in range(limit)]
    source = itertools.islice(enumerate(itertools.cycle(rows)), limit)
    start = time.monotonic()
    deadline = start + max_seconds
    later: list[asyncio.Task] = []

    def note_error(what: str) -> None:
        s.errors += 1
        s.first_error = s.first_error or what

    def stopped() -> bool:
        return time.monotonic() > deadline or s.errors >= max_errors

    async def send_feedback(client: httpx.AsyncClient, request_id: str, row: Replay, pred: str):
        if feedback_delay:
            await asyncio.sleep(feedback_delay)
        if stopped():
            return
        action = "accept" if pred == row.label else "correct"
        body = {"request_id": request_id, "label": row.label, "action": action}
        s.feedback_sent += 1
        try:
            r = await client.post("/feedback", json={**body, "source": "simulator"})
        except httpx.HTTPError as e:
            return note_error(f"feedback: {type(e).__name__}: {e}")
        if r.status_code // 100 == 2:
            s.feedback_ok += 1
            s.feedback_acked.append(request_id)
        else:
            note_error(f"feedback: HTTP {r.status_code} {r.text[:200]}")

    async def worker(client: httpx.AsyncClient) -> None:
        for i, row in source:
            if stopped():
                return
            if rate > 0:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            s.sent += 1
            body = {"features": row.features, "event_time": row.event_time}
            try:
                r = await client.post("/predict", json=body)
            except httpx.HTTPError as e:
                note_error(f"predict: {type(e).__name__}: {e}")
                continue
            if r.status_code // 100 != 2:
                note_error(f"predict: HTTP {r.status_code} {r.text[:200]}")
                continue
            answer = r.json()
            s.ok += 1
            s.acked.append(answer["request_id"])
            if wants_feedback[i]:
                task = send_feedback(client, answer["request_id"], row, answer["prediction"])
                if feedback_delay:
                    later.append(asyncio.create_task(task))
                else:
                    await task

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(30.0, pool=None)  # waiting for a free connection is the throttle
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=timeout, headers=headers
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        await asyncio.gather(*later)
    s.seconds = time.monotonic() - start
    return s
