"""drift finds the real label shift in Seattle's weather, against the right reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from closedloop.errors import DataError
from closedloop.evaluation.drift import measure_drift, sample_rows, with_predictions
from closedloop.models.persist import load_model
from closedloop.paths import CANDIDATE_DIR, SNAPSHOT_DIR
from tests.conftest import measure_drift_on, with_drift
from tests.fixtures import entry


def test_real_label_and_prediction_shift_is_detected(drift_seattle):
    summary, _ = drift_seattle
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
    # The label shifts most ("rain": 191 days in 2012, 3 in 2014): p-value ~0. The shipped
    # model is the best epoch by val loss (epoch 2), whose predictions shift less (p ~0.01).
    assert summary["top_drifted"][0] == "weather" and "prediction" in summary["top_drifted"]


def test_the_same_data_does_not_drift(drift_project):
    root, params = drift_project
    model, config = load_model(root / CANDIDATE_DIR, params["allowed_targets"])
    prod = pd.read_parquet(root / SNAPSHOT_DIR / "production.parquet")
    prod = with_predictions(prod, model, config, "production")
    kinds = {"temp_max": "feature", "wind": "feature", "weather": "target"}
    kinds["prediction"] = "prediction"
    _, summary = measure_drift(prod, prod.copy(), kinds, params["drift"])
    assert summary["drifted_share"] == 0 and summary["drifted_count"] == 0
    assert not summary["dataset_drift"] and summary["top_drifted"] == []


def test_sampling_caps_rows_and_is_deterministic(drift_project, tmp_path):
    params = with_drift(drift_project[1], row_cap=200)
    first = measure_drift_on(drift_project, tmp_path / "a", params)
    measure_drift_on(drift_project, tmp_path / "b", params)
    assert first["reference"]["rows"] == 547 and first["reference"]["sampled_rows"] == 200
    assert first["current"]["rows"] == 730 and first["current"]["sampled_rows"] == 200
    assert (tmp_path / "a/drift.json").read_bytes() == (tmp_path / "b/drift.json").read_bytes()


def test_sample_rows_draws_distinct_rows_with_its_seed():
    df = pd.DataFrame({"id": np.arange(1000)})
    a, b = sample_rows(df, 100, seed=0), sample_rows(df, 100, seed=1)
    assert len(a) == 100 and a["id"].is_unique
    assert a.equals(sample_rows(df, 100, seed=0)) and not a.equals(b)
    assert sample_rows(df, 5000, seed=0).equals(df)


def test_champion_training_data_is_the_reference(drift_project, tmp_path):
    root, _ = drift_project
    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / "entry.json").write_text(json.dumps({"present": True, **entry(3, "v3.0.0")}))
    # The champion learned on the production window itself, so nothing but noise can drift.
    shutil.copy(root / SNAPSHOT_DIR / "production.parquet", champion / "train.parquet")
    summary = measure_drift_on(drift_project, tmp_path, champion_entry=champion / "entry.json")
    assert summary["reference"] == {
        "source": "champion",
        "version": "v3.0.0",
        "rows": 730,
        "sampled_rows": 730,
    }
    assert summary["drifted_count"] == 0

    (champion / "entry.json").write_text(json.dumps({"present": False}))
    summary = measure_drift_on(drift_project, tmp_path, champion_entry=champion / "entry.json")
    assert summary["reference"]["source"] == "candidate"


def test_missing_inputs_are_one_line_errors_naming_the_file(drift_project, tmp_path):
    root, _ = drift_project
    snap = tmp_path / "snapshot"
    snap.mkdir()
    for name in ("schema.json", "train.parquet"):
        shutil.copy(root / SNAPSHOT_DIR / name, snap / name)
    with pytest.raises(DataError, match=r"production\.parquet") as e:
        measure_drift_on(drift_project, tmp_path, snapshot=snap)
    assert "\n" not in str(e.value)

    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / "entry.json").write_text(json.dumps({"present": True, **entry(1, "v1.0.0")}))
    with pytest.raises(DataError, match=r"champion/train\.parquet"):
        measure_drift_on(drift_project, tmp_path, champion_entry=champion / "entry.json")


def test_columns_param_selects_and_checks_columns(drift_project, tmp_path):
    only = with_drift(
        drift_project[1], columns=["wind"], include_target=False, include_prediction=False
    )
    assert list(measure_drift_on(drift_project, tmp_path, only)["columns"]) == ["wind"]
    bad = with_drift(drift_project[1], columns=["wind", "humidity"])
    with pytest.raises(DataError, match="humidity"):
        measure_drift_on(drift_project, tmp_path, bad)
