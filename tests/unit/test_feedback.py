"""collect with production feedback: joined, validated, deduplicated; bad rows quarantined
with a reason, and counts in = kept + quarantined."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.data.snapshot import read_schema, read_split
from closedloop.paths import QUARANTINE
from tests.conftest import ROOT

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]


def export_like(data_dir, day: str, kind: str, rows: list[dict], seq: tuple[int, int]):
    """Write a partition as `closedloop export` does."""
    part = data_dir / "feedback" / f"date={day}"
    part.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(part / f"part-{kind}-{seq[0]}-{seq[1]}.parquet", index=False)


@pytest.fixture
def production_log(tmp_path):
    """Real 2014 Seattle days replayed as predictions, with true labels fed back for all."""
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    days = df[(df.date >= "2014-01-01") & (df.date <= "2014-12-31")].reset_index(drop=True)
    ts = pd.Timestamp("2026-01-05T12:00:00Z")
    preds = [
        {
            "request_id": f"r{i}",
            "ts": ts + pd.Timedelta(seconds=i),
            "model_version": "v1.0.0",
            "event_time": row.date.date().isoformat(),
            "prediction": "sun",
            "probabilities": json.dumps({"sun": 1.0}),
            "latency_ms": 1.0,
            **{f"x_{f}": float(getattr(row, f)) for f in FEATURES},
        }
        for i, row in days.iterrows()
    ]
    labels = [
        {
            "request_id": f"r{i}",
            "ts": ts + pd.Timedelta(hours=1, seconds=i),
            "label": row.weather,
            "action": "accept" if row.weather == "sun" else "correct",
            "source": "simulator",
        }
        for i, row in days.iterrows()
    ]
    data = tmp_path / "data"
    export_like(data, "2026-01-05", "predictions", preds, (1, len(preds)))
    export_like(data, "2026-01-05", "feedback", labels, (1, len(labels)))
    return data, days


def run_collect(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    params = compose(["trainer=cpu"], conf_dir=ROOT / "conf")
    record = collect(params, out_dir=tmp_path / "snap", data_dir=data)
    return record.model_dump(), pd.read_parquet(tmp_path / QUARANTINE)


def test_labelled_feedback_forms_the_production_window_and_joins_training(
    tmp_path, monkeypatch, production_log
):
    data, days = production_log
    record, quarantine = run_collect(tmp_path, monkeypatch, data)
    fb = record["feedback"]
    assert fb["predictions_in"] == fb["predictions_kept"] == len(days) == 365
    assert fb["labelled_rows"] == 365 and fb["quarantined"] == len(quarantine) == 0
    prod = read_split("production", tmp_path / "snap")
    train = read_split("train", tmp_path / "snap")
    # The newest 120 days are the fresh window; the rest of 2014 joins training.
    assert fb["production_window"] == ["2014-09-03", "2014-12-31"] and len(prod) == 120
    assert (prod.origin == "feedback:simulator").all()
    assert (train.origin == "feedback:simulator").sum() == 365 - 120
    assert set(prod.weather) <= {"fog", "rain", "sun", "drizzle", "snow"}
    assert read_schema(tmp_path / "snap").splits["production"].time_min == "2014-09-03"


def test_corrupt_rows_are_quarantined_with_reasons(tmp_path, monkeypatch, production_log):
    data, _ = production_log
    now = pd.Timestamp("2026-01-06T00:00:00Z")
    good = {
        "model_version": "v1.0.0",
        "prediction": "sun",
        "probabilities": "{}",
        "latency_ms": 1.0,
        "event_time": "2014-06-01",
        **{f"x_{f}": 1.0 for f in FEATURES},
    }
    bad_preds = [
        {**good, "request_id": "bad-inf", "ts": now, "x_temp_max": float("inf")},  # not finite
        {**good, "request_id": "r5", "ts": now},  # duplicate of a real request id
        {**good, "request_id": "future", "ts": pd.Timestamp("2099-01-01T00:00:00Z")},  # future
        {**good, "request_id": "ok-extra", "ts": now},  # valid, its feedback is bad below
    ]
    export_like(data, "2026-01-06", "predictions", bad_preds, (400, 403))
    wrong_type = [
        {**good, "request_id": "bad-type", "ts": now, "x_wind": "windy"},
        {**good, "request_id": "ok-typed", "ts": now, "x_wind": "3.5"},
    ]
    export_like(data, "2026-01-06", "predictions", wrong_type, (404, 405))
    missing_col = [
        {k: v for k, v in {**good, "request_id": "no-wind", "ts": now}.items() if k != "x_wind"}
    ]
    export_like(data, "2026-01-06", "predictions", missing_col, (406, 406))
    bad_feedback = [
        {
            "request_id": "ok-extra",
            "ts": now,
            "label": "hail",
            "action": "correct",
            "source": "app",
        },
        {"request_id": "nobody", "ts": now, "label": "sun", "action": "correct", "source": "app"},
    ]
    export_like(data, "2026-01-06", "feedback", bad_feedback, (400, 401))

    record, quarantine = run_collect(tmp_path, monkeypatch, data)
    fb = record["feedback"]
    written_preds, written_feedback = 365 + len(bad_preds) + 2 + 1, 365 + len(bad_feedback)
    assert (
        fb["predictions_in"]
        == written_preds
        == fb["predictions_kept"] + (quarantine.kind == "prediction").sum()
    )
    assert (
        fb["feedback_in"]
        == written_feedback
        == fb["feedback_kept"] + (quarantine.kind == "feedback").sum()
    )
    reasons = dict(zip(quarantine.request_id, quarantine.reason, strict=True))
    assert "x_wind" in reasons["bad-type"] and "windy" in reasons["bad-type"]
    assert "ok-typed" not in reasons  # a numeric string in a string-typed file is still a number
    assert "x_temp_max" in reasons["bad-inf"]
    assert "duplicate request_id" in reasons["r5"]
    assert "ts" in reasons["future"] and "2099" in reasons["future"]
    assert "missing column" in reasons["no-wind"] and "x_wind" in reasons["no-wind"]
    assert "label" in reasons["ok-extra"] and "hail" in reasons["ok-extra"]
    assert "request_id" in reasons["nobody"]
    # The valid rows all survive: every real 2014 day is still labelled and used.
    assert fb["labelled_rows"] == 365
    assert all(json.loads(r) for r in quarantine.record)  # the raw row is kept for inspection


def test_arrow_and_pandera_paths_reach_the_same_verdict(tmp_path, monkeypatch, production_log):
    """The vectorised Arrow check is only a fast path: on the same corrupt files, forcing
    every file through pandera gives the same kept rows, reasons and counts."""
    from closedloop.capture import feedback

    data, _ = production_log
    now = pd.Timestamp("2026-01-06T00:00:00Z")
    base = {"model_version": "v1", "prediction": "sun", "probabilities": "{}", "latency_ms": 1.0}
    rows = [
        {**base, "request_id": "nan", "ts": now, **{f"x_{f}": float("nan") for f in FEATURES}},
        {**base, "request_id": "", "ts": now, **{f"x_{f}": 1.0 for f in FEATURES}},
        {**base, "request_id": "late", "ts": now + pd.Timedelta(days=1)}
        | {f"x_{f}": 1.0 for f in FEATURES},
        {**base, "request_id": "r7", "ts": now, **{f"x_{f}": 2.0 for f in FEATURES}},
        {**base, "request_id": "fine", "ts": now, **{f"x_{f}": 3.0 for f in FEATURES}},
    ]
    export_like(data, "2026-01-06", "predictions", rows, (500, 504))
    answers = [
        {"request_id": "fine", "ts": now, "label": None, "action": "reject", "source": "app"},
        {"request_id": "fine", "ts": now, "label": "sun", "action": "maybe", "source": "app"},
        {"request_id": "r1", "ts": now, "label": None, "action": "accept", "source": "app"},
        {"request_id": "r2", "ts": now + pd.Timedelta(days=9), "label": "fog", "source": "app"},
    ]
    export_like(data, "2026-01-06", "feedback", answers, (500, 503))

    validated = []
    original = feedback._PredictionRules.reasons

    def spy(self, raw, limit):
        validated.append(len(raw))
        return original(self, raw, limit)

    monkeypatch.setattr(feedback._PredictionRules, "reasons", spy)
    fast = feedback.load(data, {"target": "weather"}, FEATURES, CLASSES, now=now)
    # Exporter-typed files: pandera saw only the rows the Arrow check rejected.
    assert validated == [3]
    monkeypatch.setattr(feedback._Rules, "exported", lambda self, table: False)
    slow = feedback.load(data, {"target": "weather"}, FEATURES, CLASSES, now=now)

    assert fast.counts == slow.counts
    # nan, empty id, future ts; r7 a second time; feedback with a bad action, a future ts.
    # An 'accept' or a 'reject' with no label is valid (the rule the server applies too).
    assert fast.counts["quarantined"] == 3 + 1 + 2
    pd.testing.assert_frame_equal(fast.labelled, slow.labelled)
    key = ["kind", "request_id", "reason"]
    pd.testing.assert_frame_equal(
        fast.quarantine[key].sort_values(key, ignore_index=True),
        slow.quarantine[key].sort_values(key, ignore_index=True),
    )
    assert set(fast.quarantine.request_id) == {"nan", "", "late", "r7", "fine", "r2"}
    assert fast.labelled.weather.notna().all() and fast.counts["labelled_rows"] == 365


def test_unreadable_partitions_are_quarantined_whole_and_collect_goes_on(
    tmp_path, monkeypatch, production_log
):
    """A truncated, an empty, a random and a CSV file, each named as a partition: each is
    quarantined as a whole file, named, with a reason; the loop goes on with the rest."""
    data, _ = production_log
    day = data / "feedback" / "date=2026-01-06"
    day.mkdir()
    real = next((data / "feedback" / "date=2026-01-05").glob("part-predictions-*"))
    bad = {
        "part-predictions-900-905.parquet": real.read_bytes()[: real.stat().st_size // 2],
        "part-predictions-906-906.parquet": b"",
        "part-feedback-900-910.parquet": os.urandom(4096),
        "part-feedback-911-912.parquet": b"request_id,ts,label\nr1,2026-01-06,sun\n",
    }
    for name, content in bad.items():
        (day / name).write_bytes(content)

    record, quarantine = run_collect(tmp_path, monkeypatch, data)
    fb = record["feedback"]
    assert fb["files_quarantined"] == 4 and fb["labelled_rows"] == 365
    files = quarantine[quarantine.kind == "file"]
    assert sorted(Path(f).name for f in files.file) == sorted(bad)
    assert all("unreadable" in reason for reason in files.reason)
    assert len(quarantine) == 4  # no row of the good files was lost


def test_only_files_the_exporter_wrote_count_as_feedback(tmp_path, monkeypatch, production_log):
    data, _ = production_log
    day = data / "feedback" / "date=2026-01-05"
    real = next(day.glob("part-predictions-*"))
    (day / "part-predictions-copy.parquet").write_bytes(real.read_bytes())  # not export's name
    (data / "feedback" / "extra.parquet").write_bytes(real.read_bytes())
    (day / "notes.txt").write_text("hand-written\n")
    (data / "other").mkdir()
    (data / "other" / "x.parquet").write_bytes(real.read_bytes())

    record, quarantine = run_collect(tmp_path, monkeypatch, data)
    assert record["feedback"]["predictions_in"] == 365 and len(quarantine) == 0
    assert record["feedback_files"] == [
        "feedback/date=2026-01-05/part-feedback-1-365.parquet",
        "feedback/date=2026-01-05/part-predictions-1-365.parquet",
    ]
    assert record["feedback_ignored_files"] == [
        "feedback/date=2026-01-05/notes.txt",
        "feedback/date=2026-01-05/part-predictions-copy.parquet",
        "feedback/extra.parquet",
    ]


def test_rows_dated_after_their_export_are_quarantined(tmp_path, monkeypatch, production_log):
    """The exporter stamps each file with its export time: no row in it can be newer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, _ = production_log
    exported_at = pd.Timestamp("2026-01-06T12:00:00Z")
    base = {"model_version": "v1", "prediction": "sun", "probabilities": "{}", "latency_ms": 1.0}
    base |= {f"x_{f}": 1.0 for f in FEATURES}
    rows = [
        {**base, "request_id": "fine", "ts": exported_at, "event_time": "2014-05-01"},
        {**base, "request_id": "ts-after", "ts": exported_at + pd.Timedelta(hours=2)},
        {**base, "request_id": "poison", "ts": exported_at, "event_time": "2200-01-01"},
    ]
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    meta = {b"closedloop.exported_at": exported_at.isoformat().encode()}
    part = data / "feedback" / "date=2026-01-06"
    part.mkdir()
    pq.write_table(table.replace_schema_metadata(meta), part / "part-predictions-400-402.parquet")

    _, quarantine = run_collect(tmp_path, monkeypatch, data)
    reasons = dict(zip(quarantine.request_id, quarantine.reason, strict=True))
    assert set(reasons) == {"ts-after", "poison"}
    assert "ts" in reasons["ts-after"] and "export" in reasons["ts-after"]
    assert "event_time" in reasons["poison"] and "2200-01-01" in reasons["poison"]


def newer_rows(data, n: int, event_time: str) -> None:
    """n labelled predictions dated after every real one (what an attacker could send)."""
    ts = pd.Timestamp("2026-01-06T00:00:00Z")
    base = {"model_version": "v1", "prediction": "sun", "probabilities": "{}", "latency_ms": 1.0}
    preds = [
        {**base, "request_id": f"new{i}", "ts": ts, "event_time": event_time}
        | {f"x_{f}": 1.0 for f in FEATURES}
        for i in range(n)
    ]
    labels = [
        {"request_id": f"new{i}", "ts": ts, "label": "snow", "action": "correct", "source": "x"}
        for i in range(n)
    ]
    export_like(data, "2026-01-06", "predictions", preds, (500, 500 + n - 1))
    export_like(data, "2026-01-06", "feedback", labels, (500, 500 + n - 1))


def test_a_handful_of_newer_rows_cannot_move_the_production_window(
    tmp_path, monkeypatch, production_log
):
    """Five labelled rows dated 2025 used to be the whole production window: every real
    2014 row moved to train and the gate judged on five rows."""
    data, _ = production_log
    newer_rows(data, 5, "2025-06-01")
    record, _ = run_collect(tmp_path, monkeypatch, data)
    fb = record["feedback"]
    assert fb["production_window"] == ["2014-09-03", "2014-12-31"]
    assert fb["feedback_production_rows"] == 120 and fb["feedback_train_rows"] == 365 - 120
    assert fb["feedback_held_rows"] == 5 and "2025-06-01" in fb["production_reason"]
    prod = read_split("production", tmp_path / "snap")
    assert len(prod) == 120 and "snow" not in set(prod.weather)


def test_too_little_feedback_leaves_the_production_window_to_the_dataset(tmp_path, monkeypatch):
    data = tmp_path / "data"
    newer_rows(data, 40, "2014-06-01")  # 40 labelled rows: fewer than gates.min_samples
    record, _ = run_collect(tmp_path, monkeypatch, data)
    fb = record["feedback"]
    assert fb["production_from"] == "dataset" and fb["feedback_held_rows"] == 40
    assert "40" in fb["production_reason"] and "100" in fb["production_reason"]
    assert record["splits"]["production"]["time_min"] == "2014-01-01"  # the dataset's window
    train = read_split("train", tmp_path / "snap")
    assert (train.origin == "dataset").all()
