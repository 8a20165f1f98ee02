"""`closedloop monitor`: reports/monitor.json, reports/monitor.html and, optionally, alerts.

    closedloop monitor [--data-dir data] [--store-url URL] [--alerts-out reports/alerts.json]
                       [--workspace DIR]

Reads the exported traffic (data/feedback/, or the store itself: its records are exported
into a temporary directory first, so both read the same way), calibrates the label-free
estimate on the eval outputs (reports/eval/val.csv, reports/metrics.json), measures drift per
window against the model's training data when it is present (models/champion/train.parquet,
else the snapshot's train split; what `dvc repro` or `dvc pull` leaves), and checks the alert
rules. With ``--workspace`` each window's Evidently snapshot also goes into a local Evidently
Workspace, so `evidently ui --workspace DIR` shows the same drift over time.

This is a command, not a DVC stage: the traffic it reads changes by the hour, and a stage's
outputs must be a function of tracked inputs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from closedloop.errors import DataError
from closedloop.io import read_json, write_json, write_text
from closedloop.monitoring import alerts as alert_rules
from closedloop.monitoring.estimate import fit
from closedloop.monitoring.page import render
from closedloop.monitoring.windows import MonitorReport, compute
from closedloop.paths import (
    CHAMPION_ENTRY,
    EVAL_DIR,
    METRICS,
    MONITOR_HTML,
    MONITOR_JSON,
    REFERENCE_DATA,
    SNAPSHOT_DIR,
)
from closedloop.rollout.records import Records, read_records


def load_records(data_dir: Path, store_url: str | None) -> tuple[Records, str]:
    """The traffic, from the exports or (given a URL) from the store through an export."""
    if not store_url:
        return read_records(data_dir), f"{data_dir}/feedback"
    from closedloop.capture.export import export

    with tempfile.TemporaryDirectory(prefix="closedloop-monitor-") as tmp:
        export(store_url, Path(tmp))
        return read_records(tmp), "the feedback store"


def window_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: dict, timestamp):
    """Evidently's per-column drift tests (ValueDrift, the tests DataDriftPreset runs for
    drift.py, without the preset's summary widgets: half the time) on one window; the snapshot
    and the summary drift.py would write (closedloop.evaluation.drift.column_results)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from closedloop.evaluation.drift import column_results, sample_rows

    columns = list(current.columns)
    kinds = dict.fromkeys(columns, "feature")
    definition = DataDefinition(numerical_columns=columns)
    ref = sample_rows(reference[columns], cfg["row_cap"], cfg["seed"])
    cur = sample_rows(current, cfg["row_cap"], cfg["seed"])
    report = Report([ValueDrift(column=c) for c in columns], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=timestamp,
    )
    results = column_results(snapshot.dict(), kinds)
    drifted = sorted(c for c, r in results.items() if r["drifted"])
    summary = {
        "drifted_share": len(drifted) / len(results),
        "top_drifted": drifted,
        "current": {"rows": len(current)},
    }
    return snapshot, summary


def drift_measure(params: dict, snapshot: Path, champion_entry: Path, workspace: Path | None):
    """A function measuring one window's feature drift, the reference's name, or why not."""
    entry = read_json(champion_entry) if Path(champion_entry).exists() else {}
    wanted = Path(champion_entry).parent / REFERENCE_DATA if entry.get("present") else None
    if not (wanted or Path(snapshot) / "train.parquet").exists():  # before importing Evidently
        return None, None, "no training data to compare with (run `dvc repro` or `dvc pull`)"
    from closedloop.evaluation.drift import load_reference

    try:
        reference, source, where = load_reference(snapshot, champion_entry)
    except (DataError, FileNotFoundError, OSError):
        return None, None, "no training data to compare with (run `dvc repro` or `dvc pull`)"
    project = None
    if workspace is not None:
        from evidently.ui.workspace import Workspace

        ws = Workspace.create(str(workspace))
        for old in ws.search_project("closedloop monitor"):  # the page's windows, not repeats
            ws.delete_project(old.id)
        project = ws.create_project("closedloop monitor")

    def measure(part: pd.DataFrame, start: pd.Timestamp):
        columns = {
            c: c[2:] for c in part.columns if c.startswith("x_") and c[2:] in reference.columns
        }
        numeric = [c for c in columns if pd.api.types.is_numeric_dtype(part[c])]
        current = part[numeric].rename(columns=columns).dropna()
        if current.empty:
            return None
        snap, summary = window_drift(reference, current, params["drift"], start.to_pydatetime())
        if project is not None:
            ws.add_run(project.id, snap)
        return summary

    name = f"{where} (the {source['source']}'s training data)"
    return measure, name, ""


def calibration_curve(path: Path) -> list[dict]:
    if not path.exists():
        return []
    frame = pd.read_csv(path)
    return [{k: float(v) for k, v in row.items()} for row in frame.to_dict("records")]


def monitor(
    params: dict,
    data_dir: Path = Path("data"),
    store_url: str | None = None,
    eval_dir: Path = EVAL_DIR,
    metrics: Path = METRICS,
    snapshot: Path = SNAPSHOT_DIR,
    champion_entry: Path = CHAMPION_ENTRY,
    out_json: Path = MONITOR_JSON,
    out_html: Path = MONITOR_HTML,
    alerts_out: Path | None = None,
    workspace: Path | None = None,
    records: Records | None = None,
) -> MonitorReport:
    """Compute every window, check the rules, write the JSON, the page and the alerts."""
    cfg = params["monitor"]
    source = "the given records"
    if records is None:
        records, source = load_records(data_dir, store_url)
    calibration = fit(cfg["estimate"], Path(eval_dir) / "val.csv", metrics)
    measure, reference, why = (None, None, "disabled in conf/monitor/")
    if cfg["drift"]["enabled"]:
        measure, reference, why = drift_measure(params, snapshot, champion_entry, workspace)
    report = compute(
        records.frame,
        cfg,
        calibration,
        drift_fn=measure,
        source=source,
        counts=records.counts,
        calibration_curve=calibration_curve(Path(eval_dir) / "calibration_val.csv"),
        drift_reference=reference,
    )
    report.alerts = alert_rules.evaluate(report, cfg["rules"])
    write_json(out_json, report.model_dump(mode="json"))
    write_text(out_html, render(report, drift_why=why))
    if alerts_out is not None:
        write_json(
            alerts_out,
            {"alerts": report.alerts, "failing": sum(a["failing"] for a in report.alerts)},
        )
    return report
