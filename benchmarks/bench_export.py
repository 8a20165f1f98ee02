"""Export and the collect read path on 1,000,000 synthetic records, against a plain pyarrow
read of the same Parquet files.

Target: ratio <= 2.0 for collect's read (validate, deduplicate, join feedback) over a plain
`pyarrow.parquet.read_table` of the same partitions. The records are shaped as the server
logs them (uuid ids, JSON class probabilities), so the files are as wide as real ones;
collect reads only the columns it needs, and the third line shows its cost against a plain
read of just those. Export's own throughput (store -> partitions) is printed first.

    python benchmarks/bench_export.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import result, step

from closedloop.capture.export import export
from closedloop.capture.feedback import load
from closedloop.capture.store import FEEDBACK, PREDICTIONS, open_engine

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
TARGET = 2.0


def fill(url: str, n: int, feedback_share: float = 0.1, chunk: int = 100_000) -> None:
    """n prediction records shaped as the server logs them, and feedback for a share of them.

    Shaped as served: a uuid4-hex request id, the served model's version, an event date, the
    full-precision class probabilities as JSON and a latency; ts a few ms apart.
    """
    rng = np.random.default_rng(0)
    engine = open_engine(url)
    now = int(time.time() * 1e6) - n * 1000 - 7_200_000_000  # all in the past
    days = np.datetime64("2014-01-01") + np.arange(365)
    with engine.begin() as conn:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            x = rng.normal(10, 5, (size, len(FEATURES))).round(2)
            logits = rng.normal(0, 2, (size, len(CLASSES)))
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            ids = [uuid.UUID(bytes=rng.bytes(16), version=4).hex for _ in range(size)]
            conn.execute(
                PREDICTIONS.insert(),
                [
                    {
                        "request_id": ids[i],
                        "ts": now + (start + i) * 1000,
                        "model_version": "v1.0.0",
                        "event_time": str(days[(start + i) % 365]),
                        "features": json.dumps(dict(zip(FEATURES, x[i].tolist(), strict=True))),
                        "prediction": CLASSES[int(probs[i].argmax())],
                        "probabilities": json.dumps(
                            dict(zip(CLASSES, probs[i].tolist(), strict=True))
                        ),
                        "latency_ms": float(rng.gamma(2.0, 1.5)),
                    }
                    for i in range(size)
                ],
            )
            labelled = rng.random(size) < feedback_share
            conn.execute(
                FEEDBACK.insert(),
                [
                    {
                        "request_id": ids[i],
                        "ts": now + (start + i) * 1000 + 3_600_000_000,
                        "label": CLASSES[i % 5],
                        "action": "correct",
                        "source": "bench",
                    }
                    for i in np.flatnonzero(labelled).tolist()
                ],
            )
    engine.dispose()


def _median_seconds(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3, help="timings are the median of these")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, data = f"sqlite:///{tmp}/store.db", Path(tmp) / "data"
        step(f"filling a SQLite store with {args.records:,} predictions and their feedback")
        fill(url, args.records)
        step("exporting the store to Parquet partitions")
        t0 = time.perf_counter()
        moved = export(url, data)
        t_export = time.perf_counter() - t0
        files = sorted(data.rglob("*.parquet"))
        needed = {"request_id", "ts", "event_time", "prediction", "label", "action", "source"}
        needed |= {f"x_{f}" for f in FEATURES}

        def plain(columns=None):
            for f in files:
                names = pq.read_schema(f).names
                pq.read_table(f, columns=[c for c in names if c in columns] if columns else None)

        last = {}

        def collect():
            last["feedback"] = load(data, {"target": "label"}, FEATURES, CLASSES)

        step(f"timing collect's read and a plain pyarrow read, {args.rounds} rounds each")
        t_plain = _median_seconds(plain, args.rounds)
        t_collect = _median_seconds(collect, args.rounds)
        t_columns = _median_seconds(lambda: plain(needed), args.rounds)
        rows = sum(pq.read_metadata(f).num_rows for f in files)
    counts = last["feedback"].counts
    assert counts["predictions_kept"] == args.records and rows == sum(moved.values())
    assert counts["labelled_rows"] == counts["feedback_in"] == moved["feedback"]
    ratio = t_collect / t_plain
    print(
        f"  export: {sum(moved.values()):,} records store -> partitions in {t_export:.1f}s "
        f"({sum(moved.values()) / t_export:,.0f} records/s)"
    )
    print(
        f"  a plain read of only the columns collect reads: {t_columns:.2f}s, ratio "
        f"{t_collect / t_columns:.2f}; the rest is validation, dedup and join"
    )
    result(
        "collect: read+validate+dedup+join vs plain pyarrow read",
        f"{t_collect:.2f}s",
        f"{t_plain:.2f}s ({rows:,} rows, {len(files)} files)",
        ratio,
        TARGET,
    )


if __name__ == "__main__":
    main()
