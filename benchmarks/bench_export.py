"""Export and the collect read path on 1,000,000 synthetic records, against a plain pyarrow
read of the same Parquet files.

Target: ratio <= 2.0 for collect's read (validate with pandera, deduplicate, join feedback)
over a plain `pyarrow.parquet.read_table` of the same partitions. Export's own throughput
(store → partitions) is printed beside it.

    python benchmarks/bench_export.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.export import export
from pipelines.feedback import load
from pipelines.store import FEEDBACK, PREDICTIONS, open_engine

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
TARGET = 2.0


def fill(url: str, n: int, feedback_share: float = 0.1, chunk: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    engine = open_engine(url)
    now = int(time.time() * 1e6)
    with engine.begin() as conn:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            x = rng.normal(10, 5, (size, len(FEATURES))).round(2)
            conn.execute(
                PREDICTIONS.insert(),
                [
                    {
                        "request_id": f"r{start + i}",
                        "ts": now + start + i,
                        "model_version": "v1",
                        "event_time": None,
                        "features": json.dumps(dict(zip(FEATURES, row.tolist(), strict=True))),
                        "prediction": "sun",
                        "probabilities": "{}",
                        "latency_ms": 1.0,
                    }
                    for i, row in enumerate(x)
                ],
            )
            labelled = rng.random(size) < feedback_share
            conn.execute(
                FEEDBACK.insert(),
                [
                    {
                        "request_id": f"r{start + i}",
                        "ts": now + start + i + 1,
                        "label": CLASSES[i % 5],
                        "action": "correct",
                        "source": "bench",
                    }
                    for i in np.flatnonzero(labelled).tolist()
                ],
            )
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, data = f"sqlite:///{tmp}/store.db", Path(tmp) / "data"
        fill(url, args.records)
        t0 = time.perf_counter()
        moved = export(url, data)
        t_export = time.perf_counter() - t0
        files = sorted(data.rglob("*.parquet"))
        t0 = time.perf_counter()
        rows = sum(pq.read_table(f).num_rows for f in files)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        fb = load(data, {"target": "label", "time_column": None}, FEATURES, CLASSES)
        t_collect = time.perf_counter() - t0
    assert fb.counts["predictions_kept"] == args.records and rows == sum(moved.values())
    ratio = t_collect / t_plain
    print(
        f"export     {sum(moved.values()):,} records store -> partitions in {t_export:.1f}s "
        f"({sum(moved.values()) / t_export:,.0f} records/s)"
    )
    print(
        f"collect    read+validate+join {t_collect:.2f}s vs plain pyarrow read {t_plain:.2f}s "
        f"({rows:,} rows, {len(files)} files)  ratio {ratio:.2f}  target <= {TARGET}  "
        f"{'OK' if ratio <= TARGET else 'OVER TARGET'}"
    )


if __name__ == "__main__":
    main()
