"""The binary and regression examples end to end, in throwaway copies of this repository:
`dvc exp run -S dataset=breast_cancer` runs the whole loop; the regression example (diabetes)
runs, its production window really shifts (the report shows drift on the target), and
production feedback with numeric labels is captured: serve -> feedback -> export -> collect
-> dvc repro."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pandas as pd
import pytest

from tests.conftest import ROOT, cli, make_project, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project copy whose dataset is diabetes, after one full `dvc repro`."""
    root = make_project(tmp_path_factory.mktemp("regression"))
    config = root / "conf/config.yaml"
    config.write_text(config.read_text().replace("dataset: seattle_weather", "dataset: diabetes"))
    run(["dvc", "repro"], root)
    return root


def test_the_regression_loop_runs_and_reports_drift_on_the_target(project):
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert set(metrics["production"]) == {"n", "mae", "rmse", "r2"}
    comparison = json.loads((project / "reports/comparison.json").read_text())
    assert comparison["task"] == "regression" and comparison["baseline_class"] is None
    assert 100 < comparison["baseline_value"] < 160  # the mean training target (leaner half)
    drift = json.loads((project / "reports/drift.json").read_text())
    target = drift["columns"]["progression"]
    # Production holds the heaviest quarter by bmi: progression really shifts upwards.
    assert target["kind"] == "target" and target["drifted"], target
    assert drift["columns"]["prediction"]["drifted"]
    assert "K-S" in target["method"] or "Wasserstein" in target["method"]
    assert "progression" in drift["top_drifted"]
    report = (project / "reports/benchmark.md").read_text()
    assert "mae (lower is better)" in report and "rmse (lower is better)" in report
    assert "progression" in report
    errors = (project / "reports/errors.md").read_text()
    assert "Largest residuals" in errors and "Residuals by slice: progression" in errors
    gate = json.loads((project / "reports/gate.json").read_text())
    names = {c["name"] for c in gate["checks"]}
    assert {"floor:rmse", "floor:mae", "beat_baseline:rmse"} <= names


def test_numeric_feedback_is_served_exported_collected_and_judged(project):
    """Predictions for 130 patients, their true progression as feedback (a number); bad labels
    refused with one line; export, `dvc repro`: the feedback becomes the production window."""
    from closedloop.serving.server import spawn

    rows = pd.concat(
        [
            pd.read_parquet(project / f"artifacts/snapshot/{s}.parquet")
            for s in ("val", "production")
        ]
    ).head(130)
    features = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    store = f"sqlite:///{project / 'store.db'}"
    proc, url = spawn(
        ["--model-dir", "models/candidate", "--store-url", store],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            ids = []
            for _, row in rows.iterrows():
                r = client.post("/predict", json={"features": {f: float(row[f]) for f in features}})
                assert r.status_code == 200, r.text
                body = r.json()
                assert set(body) == {"request_id", "prediction", "probabilities", "model_version"}
                assert isinstance(body["prediction"], float) and body["probabilities"] is None
                ids.append(body["request_id"])
            for bad in ("severe", True, [1.0]):
                r = client.post("/feedback", json={"request_id": ids[0], "label": bad})
                assert r.status_code == 422, (bad, r.text)
                assert "label" in r.json()["detail"] and "\n" not in r.json()["detail"]
            for rid, (_, row) in zip(ids, rows.iterrows(), strict=True):
                label = float(row["progression"])
                r = client.post("/feedback", json={"request_id": rid, "label": label})
                assert r.status_code == 200 and r.json()["label"] == label, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    cli("export", "--store-url", store, cwd=project, check=True)
    run(["dvc", "repro"], project)
    schema = json.loads((project / "artifacts/snapshot/schema.json").read_text())
    assert schema["feedback"]["production_from"] == "feedback", schema["feedback"]
    assert schema["feedback"]["labelled_rows"] == 130
    assert schema["feedback"]["quarantined"] == 0
    production = pd.read_parquet(project / "artifacts/snapshot/production.parquet")
    assert len(production) == 130 and production["progression"].dtype == float
    assert sorted(production["progression"]) == sorted(rows["progression"].astype(float))
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["production"]["n"] == 130


def test_the_binary_example_runs_as_an_experiment(tmp_path):
    """`dvc exp run -S dataset=breast_cancer`: Hydra composes the dataset, its slices and its
    gates; every stage runs; the binary metrics are measured and gated."""
    root = make_project(tmp_path)
    out = run(["dvc", "exp", "run", "-S", "dataset=breast_cancer"], root).stdout
    for stage in ("collect", "train", "evaluate", "errors", "drift", "gate", "report"):
        assert f"Running stage '{stage}'" in out, out
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert {"roc_auc", "pr_auc", "precision", "recall", "f1"} <= set(metrics["production"])
    assert metrics["production"]["roc_auc"] > 0.9  # a 3-epoch MLP on 30 measurements
    gate = json.loads((root / "reports/gate.json").read_text())
    names = {c["name"] for c in gate["checks"]}
    assert {"floor:roc_auc", "floor:recall", "beat_baseline:f1"} <= names
    report = (root / "reports/benchmark.md").read_text()
    assert "roc_auc" in report and "pr_auc" in report and "mean_radius" in report
