"""Export: move new records out of the feedback store into immutable Parquet partitions.

    python -m pipelines.export [--store-url URL] [--data-dir data] [--no-dvc]

Writes ``data/feedback/date=YYYY-MM-DD/part-<kind>-<firstseq>-<lastseq>.parquet`` for the
records with ``seq`` above the watermark in ``data/feedback/_watermark.json``, then runs
`dvc add data`. Crash-safe and idempotent: each file is written whole (temp + rename) under a
name fixed by its seq range, so a re-run after a crash rewrites the same file instead of
duplicating it, and the watermark moves last. Run twice, it exports nothing twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from pipelines.feedback import FEEDBACK as FEEDBACK_PREFIX
from pipelines.feedback import PREDICTIONS as PREDICTION_PREFIX
from pipelines.io import atomic_path, read_json, run_stage, write_json
from pipelines.paths import DATA_DIR
from pipelines.store import FEEDBACK, PREDICTIONS, open_engine

CHUNK = 100_000  # records read from the store at a time
WATERMARK = "_watermark.json"


def _frame(kind: str, rows: list) -> pd.DataFrame:
    df = pd.DataFrame([dict(r._mapping) for r in rows])
    df["ts"] = pd.to_datetime(df["ts"], unit="us", utc=True)
    if kind == "predictions":
        features = pd.DataFrame([json.loads(f) for f in df.pop("features")], index=df.index)
        for column in features.columns:
            df[f"x_{column}"] = pd.to_numeric(features[column], errors="coerce")
    return df


def _write_partitions(kind: str, df: pd.DataFrame, out: Path) -> int:
    prefix = PREDICTION_PREFIX if kind == "predictions" else FEEDBACK_PREFIX
    written = 0
    for day, part in df.groupby(df["ts"].dt.strftime("%Y-%m-%d"), sort=True):
        first, last = int(part["seq"].min()), int(part["seq"].max())
        target = out / f"date={day}" / f"{prefix}{first}-{last}.parquet"
        with atomic_path(target) as tmp:
            part.drop(columns="seq").to_parquet(tmp, index=False)
        written += len(part)
    return written


def export(store_url: str, data_dir: Path = DATA_DIR, chunk: int = CHUNK) -> dict:
    """Export every record past the watermark; return how many of each kind moved."""
    out = Path(data_dir) / "feedback"
    mark_path = out / WATERMARK
    mark = read_json(mark_path) if mark_path.exists() else {"predictions": 0, "feedback": 0}
    engine = open_engine(store_url, create=False)
    moved = {}
    new_mark = dict(mark)
    with engine.connect() as conn:
        for kind, table in (("predictions", PREDICTIONS), ("feedback", FEEDBACK)):
            moved[kind] = 0
            while True:
                rows = conn.execute(
                    select(table)
                    .where(table.c.seq > new_mark[kind])
                    .order_by(table.c.seq)
                    .limit(chunk)
                ).fetchall()
                if not rows:
                    break
                moved[kind] += _write_partitions(kind, _frame(kind, rows), out)
                new_mark[kind] = int(rows[-1].seq)
    engine.dispose()
    if new_mark != mark:
        write_json(mark_path, new_mark)  # last: a crash before this re-exports the same files
    return moved


def main(argv: list[str] | None = None) -> None:
    from pipelines.config import load_params

    ap = argparse.ArgumentParser(
        prog="python -m pipelines.export", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--store-url", help="the feedback store (default: serve.store_url)")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--no-dvc", action="store_true", help="do not run `dvc add` afterwards")
    args = ap.parse_args(argv)
    url = args.store_url or load_params()["serve"]["store_url"]
    moved = export(url, args.data_dir)
    if not args.no_dvc:
        subprocess.run([sys.executable, "-m", "dvc", "add", "-q", str(args.data_dir)], check=True)
    print(
        f"export: {moved['predictions']} predictions, {moved['feedback']} feedback -> "
        f"{args.data_dir}/feedback/" + ("" if args.no_dvc else " (data.dvc updated)")
    )


if __name__ == "__main__":
    run_stage(main)
