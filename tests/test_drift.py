"""drift finds the real label shift in Seattle's weather, against the right reference."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from closedloop.config import compose, dump
from closedloop.data.collect import collect
from closedloop.errors import DataError
from closedloop.evaluation.drift import drift, measure_drift, sample_rows, with_predictions
from closedloop.models.persist import load_model
from closedloop.paths import CANDIDATE_DIR, SNAPSHOT_DIR
from closedloop.training.train import train
from tests.conftest import ROOT, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The real loop up to train in a scratch directory, with its params.yaml: seattle_weather
    on the CPU, 15 epochs (a 3-epoch model's predictions only just shift: p = 0.013)."""
    root = tmp_path_factory.mktemp("project")
    params = compose(["trainer=cpu", "trainer.max_epochs=15"], conf_dir=ROOT / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        collect(params, SNAPSHOT_DIR, root / "data")
        train(params, SNAPSHOT_DIR, CANDIDATE_DIR)
    (root / "params.yaml").write_text(dump(params))
    return root, params


def measure(project, out_dir, params=None, champion_entry=None, snapshot=None):
    """Run the stage's function on the project's inputs, writing into ``out_dir``."""
    root, default = project
    return drift(
        params or default,
        snapshot=snapshot or root / SNAPSHOT_DIR,
        model_dir=root / CANDIDATE_DIR,
        champion_entry=champion_entry or out_dir / "no-champion" / "entry.json",
        html=out_dir / "drift.html",
        out=out_dir / "drift.json",
    )


def with_drift(params, **changes):
    return {**params, "drift": {**params["drift"], **changes}}


@pytest.fixture(scope="module")
def seattle(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("seattle")
    return measure(project, out), out


def test_real_label_and_prediction_shift_is_detected(seattle):
    summary, _ = seattle
    cols = summary["columns"]
    assert cols["weather"]["kind"] == "target" and cols["prediction"]["kind"] == "prediction"
    assert cols["weather"]["drifted"] and cols["prediction"]["drifted"]
    assert cols["weather"]["method"] == "chi-square p_value"
    assert cols["weather"]["score"] < cols["weather"]["threshold"]
    assert {c for c, r in cols.items() if r["kind"] == "feature"} == {
        "precipitation",
        "temp_max",
        "temp_min",
        "wind",
    }
    assert summary["reference"] == {
        "source": "candidate",
        "version": None,
        "rows": 547,  # 2012-01 .. 2013-06
        "sampled_rows": 547,
    }
    assert summary["current"] == {"rows": 730, "sampled_rows": 730}  # 2014 .. 2015
    drifted = [c for c, r in cols.items() if r["drifted"]]
    assert summary["drifted_count"] == len(drifted)
    assert summary["drifted_share"] == len(drifted) / summary["n_columns"]
    assert summary["dataset_drift"] == (summary["drifted_share"] >= 0.5)
    assert sorted(summary["top_drifted"]) == sorted(drifted)
    # The label ("rain": 191 days in 2012, 3 in 2014) and predictions shift most: p-values ~0.
    assert set(summary["top_drifted"][:2]) == {"weather", "prediction"}


def test_the_same_data_does_not_drift(project):
    root, params = project
    model, config = load_model(root / CANDIDATE_DIR)
    prod = pd.read_parquet(root / SNAPSHOT_DIR / "production.parquet")
    prod = with_predictions(prod, model, config, "production")
    kinds = {"temp_max": "feature", "wind": "feature", "weather": "target"}
    kinds["prediction"] = "prediction"
    _, summary = measure_drift(prod, prod.copy(), kinds, params["drift"])
    assert summary["drifted_share"] == 0 and summary["drifted_count"] == 0
    assert not summary["dataset_drift"] and summary["top_drifted"] == []


def test_sampling_caps_rows_and_is_deterministic(project, tmp_path):
    params = with_drift(project[1], row_cap=200)
    first = measure(project, tmp_path / "a", params)
    measure(project, tmp_path / "b", params)
    assert first["reference"]["rows"] == 547 and first["reference"]["sampled_rows"] == 200
    assert first["current"]["rows"] == 730 and first["current"]["sampled_rows"] == 200
    assert (tmp_path / "a/drift.json").read_bytes() == (tmp_path / "b/drift.json").read_bytes()


def test_sample_rows_draws_distinct_rows_with_its_seed():
    df = pd.DataFrame({"id": np.arange(1000)})
    a, b = sample_rows(df, 100, seed=0), sample_rows(df, 100, seed=1)
    assert len(a) == 100 and a["id"].is_unique
    assert a.equals(sample_rows(df, 100, seed=0)) and not a.equals(b)
    assert sample_rows(df, 5000, seed=0).equals(df)


def test_champion_training_data_is_the_reference(project, tmp_path):
    root, _ = project
    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / "entry.json").write_text(json.dumps({"present": True, "version": "v3"}))
    # The champion learned on the production window itself, so nothing but noise can drift.
    shutil.copy(root / SNAPSHOT_DIR / "production.parquet", champion / "train.parquet")
    summary = measure(project, tmp_path, champion_entry=champion / "entry.json")
    assert summary["reference"] == {
        "source": "champion",
        "version": "v3",
        "rows": 730,
        "sampled_rows": 730,
    }
    assert summary["drifted_count"] == 0

    (champion / "entry.json").write_text(json.dumps({"present": False}))
    summary = measure(project, tmp_path, champion_entry=champion / "entry.json")
    assert summary["reference"]["source"] == "candidate"


def test_missing_inputs_are_one_line_errors_naming_the_file(project, tmp_path):
    root, _ = project
    snap = tmp_path / "snapshot"
    snap.mkdir()
    for name in ("schema.json", "train.parquet"):
        shutil.copy(root / SNAPSHOT_DIR / name, snap / name)
    with pytest.raises(DataError, match=r"production\.parquet") as e:
        measure(project, tmp_path, snapshot=snap)
    assert "\n" not in str(e.value)

    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / "entry.json").write_text(json.dumps({"present": True, "version": "v1"}))
    with pytest.raises(DataError, match=r"champion/train\.parquet"):
        measure(project, tmp_path, champion_entry=champion / "entry.json")


def test_columns_param_selects_and_checks_columns(project, tmp_path):
    only = with_drift(project[1], columns=["wind"], include_target=False, include_prediction=False)
    assert list(measure(project, tmp_path, only)["columns"]) == ["wind"]
    bad = with_drift(project[1], columns=["wind", "humidity"])
    with pytest.raises(DataError, match="humidity"):
        measure(project, tmp_path, bad)


@pytest.mark.slow
def test_stage_end_to_end_writes_both_reports(project, seattle):
    root, _ = project
    run([sys.executable, "-m", "pipelines.drift"], root, extra_env={"PYTHONPATH": str(ROOT)})
    html = root / "reports" / "drift.html"
    assert html.stat().st_size > 100_000 and b"<html" in html.read_bytes()[:2000].lower()
    # The same bytes as the in-process run: nothing in the JSON depends on time or process.
    assert (root / "reports/drift.json").read_bytes() == (seattle[1] / "drift.json").read_bytes()
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
