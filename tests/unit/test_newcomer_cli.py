"""What a new user meets first on the command line: starting capture again, empty results
said as sentences, and a request without event_time that collect warns about."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from click.testing import CliRunner

from closedloop.capture.export import export
from closedloop.capture.feedback import load
from closedloop.capture.store import FeedbackRecord, FeedbackStore, PredictionRecord
from closedloop.cli import cli
from closedloop.data.collect import feedback_summary
from tests.conftest import BIN, run

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
DS = {"target": "weather", "time_column": "date"}


def log(url: str, n: int, event_time: bool = True) -> None:
    store = FeedbackStore(url, batch_size=16, flush_interval_ms=5, personal={}, hash_key=None)
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(n):
        when = f"2014-03-{i % 28 + 1:02d}" if event_time else None
        x = {f: float(i) for f in FEATURES}
        store.log_prediction(
            PredictionRecord(f"r{i}", now, "v1", x, "sun", {"sun": 1.0}, 1.0, when)
        )
        store.log_feedback(FeedbackRecord(f"r{i}", now, "rain", "correct", "app"))
    store.flush()
    store.close()


@pytest.fixture
def project(tmp_path):
    """A git + DVC repository with an empty data/ committed, as a fresh clone has."""
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@closedloop.invalid"],
        ["git", "config", "user.name", "t"],
        [str(BIN / "dvc"), "init", "-q"],
        ["mkdir", "data"],
        [str(BIN / "dvc"), "add", "-q", "data"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "fresh"],
    ):
        run(cmd, tmp_path)
    return tmp_path


def test_reset_capture_removes_the_store_and_the_feedback_and_nothing_git_tracks(
    project, monkeypatch
):
    monkeypatch.chdir(project)
    url = "sqlite:///feedback.db"
    log(url, 20)
    assert export(url, project / "data") == {"predictions": 20, "feedback": 20}
    result = CliRunner().invoke(cli, ["reset-capture", "--store-url", url])
    assert result.exit_code == 0, result.output
    assert "removed feedback.db" in result.output and "the watermark among them" in result.output
    assert not (project / "feedback.db").exists() and not (project / "data/feedback").exists()
    assert run(["git", "status", "--porcelain"], project).stdout == ""  # data.dvc as committed
    # and capture starts again cleanly: a new store exports from the start, no watermark clash
    log(url, 5)
    assert export(url, project / "data") == {"predictions": 5, "feedback": 5}
    again = CliRunner().invoke(cli, ["reset-capture", "--store-url", url])
    assert again.exit_code == 0
    nothing = CliRunner().invoke(cli, ["reset-capture", "--store-url", url])
    assert nothing.output.strip().endswith(
        "nothing to remove: no local store and no exported feedback"
    )


def test_reset_capture_refuses_a_server_database_in_one_line(project, monkeypatch):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(
        cli, ["reset-capture", "--store-url", "postgresql+psycopg://u:secret@db/x"]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "only a local SQLite store" in result.output
    assert "secret" not in result.output


def test_export_with_nothing_new_says_so(project, monkeypatch):
    monkeypatch.chdir(project)
    url = "sqlite:///feedback.db"
    log(url, 3)
    args = ["export", "--store-url", url, "--no-dvc"]
    assert "3 predictions, 3 feedback" in CliRunner().invoke(cli, args).output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    assert again.output == "export: nothing new in the store since the last export into data/\n"


def test_errors_show_with_no_rows_is_a_sentence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    empty = pd.DataFrame(
        {"row": pd.Series(dtype=int), "failure_type": pd.Series(dtype=str)}
        | {"time": pd.Series(dtype="datetime64[ns]"), "impact": pd.Series(dtype=float)}
    )
    empty.to_parquet(tmp_path / "reports/errors.parquet")
    result = CliRunner().invoke(cli, ["errors", "show", "--type", "fog->sun"])
    assert result.exit_code == 0
    assert result.output == (
        "No mispredictions: the candidate got every row of the production window right.\n"
    )
    assert "Empty DataFrame" not in result.output


def test_a_request_without_event_time_is_counted_and_collect_warns(tmp_path):
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    log(url, 4, event_time=False)
    export(url, tmp_path / "data")
    fb = load(tmp_path / "data", DS, FEATURES, CLASSES)
    assert fb.counts["labelled_undated"] == 4 and fb.counts["labelled_rows"] == 4
    lines = feedback_summary(fb.counts, "the dataset's: 4 labelled feedback row(s) ...")
    assert any(
        ln.startswith("warning: 4 labelled row(s) came without an event_time") for ln in lines
    )
    assert not any("{" in ln for ln in lines), lines  # sentences, not a raw dict


def test_collect_says_when_there_is_no_feedback_yet():
    counts = dict.fromkeys(
        ["predictions_in", "feedback_in", "quarantined", "files_quarantined", "files_ignored"], 0
    )
    assert feedback_summary({**counts, "labelled_rows": 0}, "x") == [
        "no exported feedback in data/feedback/ yet: the production window is the dataset's own"
    ]
