"""Stage `drift`: how far the production window has moved from the data the model learned on.

Reads params `drift` and `allowed_targets`, the snapshot, models/candidate/ and
models/champion/. The reference is
the champion's training data (models/champion/train.parquet) when a champion exists, so
drift is measured against what production actually runs on; before the first promotion it is
the candidate's own training split. Features, the label (label shift) and the candidate's
predicted class on both sides (prediction shift) are tested with Evidently's
DataDriftPreset. Writes reports/drift.html (Evidently's report) and reports/drift.json (the
verdicts the gate and the PR comment read; the same inputs always give the same bytes).
"""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset

from closedloop.artefacts.champion import ChampionEntry
from closedloop.artefacts.drift import DriftReport
from closedloop.data.snapshot import read_schema, read_split
from closedloop.errors import DataError
from closedloop.io import atomic_path
from closedloop.models.persist import load_model, predict_proba
from closedloop.numerics import pin
from closedloop.paths import (
    CANDIDATE_DIR,
    CHAMPION_ENTRY,
    DRIFT_HTML,
    DRIFT_JSON,
    MODEL_CONFIG,
    REFERENCE_DATA,
    SNAPSHOT_DIR,
)

PREDICTION = "prediction"  # the column holding the candidate's predicted class


# Evidently names each widget with a fresh uuid4 (metric_<hex>) or uuid7; nothing else in the
# report is random. Numbering them in order of appearance makes the same report the same bytes.
_RANDOM_IDS = re.compile(
    r"(?<=metric_)[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)


def stable_ids(html: str) -> str:
    """Replace Evidently's random widget ids with sequential ones of the same shape."""
    seen: dict[str, str] = {}

    def number(m: re.Match) -> str:
        raw = m.group(0)
        if raw not in seen:
            n = len(seen) + 1
            seen[raw] = f"{n:032x}" if "-" not in raw else str(uuid.UUID(int=n))
        return seen[raw]

    return _RANDOM_IDS.sub(number, html)


def sample_rows(df: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows, seeded and without replacement: Evidently's time grows with the
    row count, while its verdicts at these sizes hardly move."""
    if len(df) <= cap:
        return df.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=cap, replace=False))
    return df.iloc[keep].reset_index(drop=True)


def with_predictions(df: pd.DataFrame, model, config: dict, where: str) -> pd.DataFrame:
    """``df`` plus the candidate's predicted class, so prediction shift is tested like a column."""
    missing = [f for f in config["features"] if f not in df.columns]
    if missing:
        raise DataError(f"{where}: the candidate's feature(s) {missing} are missing")
    probs = predict_proba(model, df[config["features"]].to_numpy(dtype=np.float32)).numpy()
    return df.assign(**{PREDICTION: np.asarray(config["classes"])[probs.argmax(1)]})


def measure_drift(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str], cfg: dict
) -> tuple[Snapshot, dict]:
    """Evidently's snapshot and our summary for the columns in ``kinds``.

    ``kinds`` maps each column to "feature" (numeric) or "target" / "prediction"
    (categorical); ``cfg`` is params `drift` (row_cap, seed, drift_share). The summary's
    "columns" is keyed by name (drift.json lists them by name); "top_drifted" names the drifted
    columns, most drifted first (see _strength), ties by name.
    """
    columns = list(kinds)
    ref = sample_rows(reference[columns], cfg["row_cap"], cfg["seed"])
    cur = sample_rows(current[columns], cfg["row_cap"], cfg["seed"])
    definition = DataDefinition(
        numerical_columns=[c for c in columns if kinds[c] == "feature"],
        categorical_columns=[c for c in columns if kinds[c] != "feature"],
    )
    report = Report(
        [DataDriftPreset(columns=columns, drift_share=cfg["drift_share"])], include_tests=True
    )
    # chi-square divides by zero for a class the reference never has; its p-value (0) stands.
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
    results = column_results(snapshot.dict(), kinds)
    drifted = [c for c, r in results.items() if r["drifted"]]
    share = len(drifted) / len(results)
    summary = {
        "n_columns": len(results),
        "drifted_count": len(drifted),
        "drifted_share": share,
        "dataset_drift": share >= cfg["drift_share"],
        "columns": results,
        "top_drifted": sorted(drifted, key=lambda c: (-_strength(results[c]), c)),
        "reference": {"rows": len(reference), "sampled_rows": len(ref)},
        "current": {"rows": len(current), "sampled_rows": len(cur)},
    }
    return snapshot, summary


def column_results(report: dict, kinds: dict[str, str]) -> dict[str, dict]:
    """Per column: Evidently's test name, score, threshold and verdict, from ``snapshot.dict()``.

    Each ValueDrift metric carries the resolved method and threshold in its config and the
    score as its value; the verdict is its test's status (FAIL means drift), so the direction
    of each test (p-value below, or distance at or above, the threshold) stays Evidently's.
    """
    failed = {
        t["metric_config"]["metric_id"]: t["status"] == "FAIL"
        for t in report["tests"]
        if t["metric_config"]["params"].get("type") == "evidently:metric_v2:ValueDrift"
    }
    out = {}
    for m in report["metrics"]:
        config = m["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            out[config["column"]] = {
                "kind": kinds[config["column"]],
                "method": config["method"],
                "score": float(m["value"]),
                "threshold": float(config["threshold"]),
                "drifted": failed[m["id"]],
            }
    if set(out) != set(kinds):
        raise RuntimeError(f"Evidently reported drift for {sorted(out)}, not {sorted(kinds)}")
    return out


def _strength(result: dict) -> float:
    """How far a drifted column is past its threshold, comparable across test families.

    A drifted column below its threshold is a p-value test: log(p) / log(threshold). One at or
    above it is a distance: distance / threshold. Both are >= 1 and grow with the evidence.
    """
    score, threshold = result["score"], result["threshold"]
    if score < threshold:
        return math.log(max(score, 1e-300)) / math.log(threshold)
    return score / threshold


def load_reference(snapshot: Path, champion_entry: Path) -> tuple[pd.DataFrame, dict, str]:
    """The champion's training data when one is in production, else the candidate's; with
    where it came from (for the JSON) and its path (for error messages)."""
    entry = ChampionEntry.read(champion_entry)
    if entry is not None:
        path = Path(champion_entry).parent / REFERENCE_DATA
        if not path.exists():
            raise DataError(f"{path}: the champion's training data is missing; run `dvc repro`")
        return pd.read_parquet(path), {"source": "champion", "version": entry.version}, str(path)
    path = Path(snapshot) / "train.parquet"
    return read_split("train", snapshot), {"source": "candidate", "version": None}, str(path)


def drift(
    params: dict,
    snapshot: Path = SNAPSHOT_DIR,
    model_dir: Path = CANDIDATE_DIR,
    champion_entry: Path = CHAMPION_ENTRY,
    html: Path = DRIFT_HTML,
    out: Path = DRIFT_JSON,
) -> DriftReport:
    """Measure drift of the production window against the reference; write both reports."""
    pin(params.get("numerics"))  # the same predictions on any x86-64 CPU
    cfg = params["drift"]
    schema = read_schema(snapshot)
    current = read_split("production", snapshot)
    current_where = str(Path(snapshot) / "production.parquet")
    reference, source, reference_where = load_reference(snapshot, champion_entry)

    kinds = dict.fromkeys(cfg["columns"] or schema.features, "feature")
    if cfg["include_target"]:
        kinds[schema.target] = "target"
    for where, df in ((reference_where, reference), (current_where, current)):
        missing = [c for c in kinds if c not in df.columns]
        if missing:
            raise DataError(f"{where}: column(s) {missing} not found (see params drift.columns)")
        if df.empty:
            raise DataError(f"{where}: no rows to measure drift on")
    if cfg["include_prediction"]:
        if PREDICTION in kinds:
            raise DataError(f"{current_where}: column {PREDICTION!r} is reserved for predictions")
        if not (Path(model_dir) / MODEL_CONFIG).exists():
            raise DataError(
                f"{Path(model_dir) / MODEL_CONFIG}: no candidate; run `dvc repro train`"
            )
        model, config = load_model(model_dir, params["allowed_targets"])
        reference = with_predictions(reference, model, config, reference_where)
        current = with_predictions(current, model, config, current_where)
        kinds[PREDICTION] = "prediction"

    snap, summary = measure_drift(reference, current, kinds, cfg)
    summary["reference"].update(source)
    report = DriftReport.model_validate(summary)
    with atomic_path(html) as tmp:
        snap.save_html(str(tmp))  # Evidently writes nothing when given a Path, only a str
        tmp.write_text(stable_ids(tmp.read_text(encoding="utf-8")), encoding="utf-8")
    report.write(out)
    return report
