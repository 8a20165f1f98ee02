"""Export: store → immutable partitions, exactly once, crash-safe; collect joins them."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop.capture import export as export_mod
from closedloop.capture.export import WATERMARK, export
from closedloop.capture.feedback import load
from closedloop.capture.store import FeedbackRecord, FeedbackStore, PredictionRecord
from closedloop.errors import StoreError

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
DS = {"target": "weather", "time_column": "date"}


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


def test_export_twice_exports_nothing_twice(tmp_path):
    url, data = f"sqlite:///{tmp_path / 'fb.db'}", tmp_path / "data"
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


def test_crash_mid_export_leaves_no_partial_file_and_no_moved_watermark(tmp_path, monkeypatch):
    url, data = f"sqlite:///{tmp_path / 'fb.db'}", tmp_path / "data"
    fill(url, 0, 50)
    real = export_mod._write_partitions

    def crash_on_feedback(kind, df, out):
        if kind == "feedback":
            raise KeyboardInterrupt("killed")
        return real(kind, df, out)

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


def test_export_updates_data_dvc(tmp_path):
    from tests.conftest import run

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    fill(url, 0, 10)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "add", "-q", "data"], repo)
    before = (repo / "data.dvc").read_text()
    run(
        ["closedloop", "export", "--store-url", url],
        repo,
    )
    after = (repo / "data.dvc").read_text()
    assert after != before and "nfiles: 3" in after  # two partitions and the watermark


def test_files_left_by_a_killed_export_are_replaced_not_duplicated(tmp_path):
    """A SIGKILL skips all cleanup: the next export removes files above the watermark."""
    url, data = f"sqlite:///{tmp_path / 'fb.db'}", tmp_path / "data"
    fill(url, 0, 30)
    export(url, data, chunk=10)
    fill(url, 30, 30)
    export(url, data, chunk=25)  # a run that "died" after its files, before its watermark
    mark = data / "feedback" / WATERMARK
    mark.write_text('{"feedback": 30, "predictions": 30}\n')
    fill(url, 60, 5)  # more records arrive before the re-run: its chunks differ
    assert export(url, data, chunk=25) == {"predictions": 35, "feedback": 35}
    preds = pd.concat(pd.read_parquet(p) for p in data.rglob("part-predictions-*.parquet"))
    assert len(preds) == 65 and preds.request_id.is_unique
    schema = pq.read_schema(next(data.rglob("part-predictions-*.parquet")))
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert all(schema.field(f"x_{f}").type == pa.float64() for f in FEATURES)


def test_a_recreated_store_is_refused_not_silently_skipped(tmp_path):
    """A deleted and recreated store restarts its seq at 1: below the old watermark, its
    records would never be exported. Export refuses it, naming both stores."""
    db = tmp_path / "fb.db"
    url, data = f"sqlite:///{db}", tmp_path / "data"
    fill(url, 0, 30)
    assert export(url, data) == {"predictions": 30, "feedback": 30}
    mark = (data / "feedback" / WATERMARK).read_text()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"fb.db{suffix}").unlink(missing_ok=True)
    fill(url, 30, 10)
    with pytest.raises(StoreError, match=r"is store \w+, but .*_watermark.json counts records"):
        export(url, data)
    assert (data / "feedback" / WATERMARK).read_text() == mark  # nothing moved
    assert export(url, tmp_path / "data-new") == {"predictions": 10, "feedback": 10}
