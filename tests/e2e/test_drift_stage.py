"""The drift stage end to end, as DVC runs it."""

from __future__ import annotations

import sys

from closedloop.paths import SNAPSHOT_DIR
from tests.conftest import ROOT, run


def test_stage_end_to_end_writes_both_reports(drift_project, drift_seattle):
    root, _ = drift_project
    run([sys.executable, "-m", "pipelines.drift"], root, extra_env={"PYTHONPATH": str(ROOT)})
    html = root / "reports" / "drift.html"
    assert html.stat().st_size > 100_000 and b"<html" in html.read_bytes()[:2000].lower()
    # The same bytes as the in-process run: nothing in the JSON depends on time or process.
    assert (root / "reports/drift.json").read_bytes() == (
        drift_seattle[1] / "drift.json"
    ).read_bytes()
    assert not list((root / "reports").glob(".*.tmp"))

    production = root / SNAPSHOT_DIR / "production.parquet"
    production.rename(production.with_suffix(".bak"))
    try:
        proc = run(
            [sys.executable, "-m", "pipelines.drift"],
            root,
            check=False,
            extra_env={"PYTHONPATH": str(ROOT)},
        )
    finally:
        production.with_suffix(".bak").rename(production)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "production.parquet" in proc.stderr
