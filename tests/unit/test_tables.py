"""A user's own table by YAML alone: sources, feature types, missing values, bad labels, and
the one encoding that train, evaluate, drift and the server share."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from closedloop.capture.store import NullStore
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.data.snapshot import read_split
from closedloop.errors import DataError
from closedloop.models.encoding import OOV, Encoding
from closedloop.models.persist import load_model, predict_proba
from closedloop.serving.server import create_app, load_served_model
from closedloop.training.train import train
from tests.conftest import ROOT
from tests.fixtures import cars_table, readme_block

CARS_YAML = readme_block("# conf/dataset/cars.yaml")


def cars_conf(root) -> None:
    """conf/ of this repository in ``root``, plus the README's conf/dataset/cars.yaml."""
    if not (root / "conf").exists():
        shutil.copytree(ROOT / "conf", root / "conf")
    (root / "conf/dataset/cars.yaml").write_text(CARS_YAML)


def cars_project(root, *overrides: str) -> dict:
    """A scratch project: conf/ with the README's cars.yaml, data/raw/cars.csv; its params."""
    cars_conf(root)
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    cars_table().to_csv(root / "data/raw/cars.csv", index=False)
    return compose(
        ["dataset=cars", "trainer=cpu", "trainer.max_epochs=3", *overrides], root / "conf"
    )


def other_source(root, target: str, *arguments: str) -> dict:
    """The cars dataset read by another source ``_target_`` with its ``arguments``."""
    cars_conf(root)
    overrides = [f"dataset.source._target_={target}", "~dataset.source.path", *arguments]
    return compose(["dataset=cars", *overrides], root / "conf")


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    """The README's cars dataset collected and trained, in a scratch working directory."""
    root = tmp_path_factory.mktemp("cars")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    params = cars_project(root)
    schema = collect(params, out_dir=root / "snap", data_dir=root / "data")
    train(params, snapshot=root / "snap", out_dir=root / "model")
    yield root, params, schema
    mp.undo()


def test_the_readme_yaml_is_a_dataset_with_types_and_default_slices(cars):
    _, params, schema = cars
    ds = params["dataset"]
    assert ds["features"]["categorical"] == ["Cylinders", "make"]
    assert ds["missing"] == {"default": "impute"}  # from conf/base/dataset.yaml
    assert ds["classes"] is None and schema.classes == ["Europe", "Japan", "USA"]
    assert params["slices"]["name"] == "default"  # no conf/slices/cars.yaml
    assert {"by": "categorical", "name": "categorical"} in params["slices"]["slices"]


def test_rows_without_a_label_are_quarantined_and_counted(cars):
    root, _, schema = cars
    rows = schema.dataset_rows
    assert (rows.rows_in, rows.kept, rows.quarantined, rows.unused) == (406, 401, 5, 0)
    assert rows.rows_in == rows.kept + rows.quarantined + rows.unused
    assert rows.reasons == {"target 'Origin': missing": 5}
    q = pd.read_parquet(root / "reports/quarantine.parquet")
    assert q["request_id"].tolist() == [f"row {i}" for i in (10, 50, 200, 300, 390)]
    assert set(q["kind"]) == {"dataset"} and set(q["file"]) == {"data/raw/cars.csv"}
    assert json.loads(q["record"][0])["make"] == cars_table().loc[10, "make"]


def test_missing_values_are_kept_and_imputed_with_the_train_median(cars):
    root, *_ = cars
    train_split = read_split("train", root / "snap")
    assert train_split["Horsepower"].isna().sum() == 2  # kept in the snapshot, as they came
    _, config = load_model(root / "model", ["closedloop.models."])
    enc = Encoding.from_config(config)
    assert enc.medians["Horsepower"] == float(train_split["Horsepower"].median())
    x, counts = enc.transform(train_split)
    assert counts["Horsepower"]["missing"] == 2 and np.isfinite(x).all()
    hp = x[:, enc.numeric.index("Horsepower")]
    assert (hp[train_split["Horsepower"].isna().to_numpy()] == enc.medians["Horsepower"]).all()


def test_the_encoding_is_saved_as_data_and_unseen_values_go_to_the_oov_bucket(cars):
    root, *_ = cars
    config = json.loads((root / "model/config.json").read_text())
    enc = config["encoding"]
    assert enc["categorical"]["Cylinders"] == ["3", "4", "6", "8"]  # integer codes as text
    assert "volkswagen" in enc["categorical"]["make"] and "<oov>" not in enc["categorical"]["make"]
    weights = load_file(str(root / "model/model.safetensors"))  # no pickle anywhere
    width = Encoding.from_config(config).width
    assert (
        weights["mean"].shape == (width,) == (5 + (4 + 2) + (len(enc["categorical"]["make"]) + 2),)
    )
    production = read_split("production", root / "snap")
    _, counts = Encoding.from_config(config).transform(production)
    assert counts["make"]["oov"] > 0 and counts["Cylinders"]["oov"] == 3  # 5 cylinders: new


def test_server_types_follow_the_schema_and_unseen_categories_are_counted(cars):
    root, params, _ = cars
    served = load_served_model(root / "model", allowed=params["allowed_targets"])
    row = cars_table().iloc[300]
    good = {
        "Miles_per_Gallon": float(row["Miles_per_Gallon"]),
        "Horsepower": None,  # imputed, by policy
        "Displacement": float(row["Displacement"]),
        "Weight_in_lbs": int(row["Weight_in_lbs"]),
        "Acceleration": float(row["Acceleration"]),
        "Cylinders": 4,  # an integer code reads as its text, as in the CSV
        "make": "tesla",  # never seen in training
    }
    with TestClient(create_app(params, served, NullStore())) as client:
        r = client.post("/predict", json={"features": good})
        assert r.status_code == 200, r.text
        assert client.get("/healthz").json()["oov"] == {"Cylinders": 0, "make": 1}
        # The same row through the model directly: the same encoding, the same answer.
        x, _ = served.encoding.transform(pd.DataFrame([{**good, "Cylinders": "4"}]))
        direct = predict_proba(served.model, x)[0].tolist()
        assert r.json()["probabilities"] == dict(zip(served.classes, direct, strict=True))
        bad = client.post("/predict", json={"features": {**good, "Horsepower": "fast"}})
        assert bad.status_code == 422
        assert bad.json()["detail"] == "features.Horsepower: expected a number, got str 'fast'"
        bad = client.post("/predict", json={"features": {**good, "make": 3.5}})
        assert bad.status_code == 422 and bad.json()["detail"].startswith(
            "features.make: expected a string (a category)"
        )
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Features"]
        assert "null" in json.dumps(schema["properties"]["Horsepower"])


def test_a_reject_policy_makes_null_a_422_at_the_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = cars_project(tmp_path, "+dataset.missing.Acceleration=reject", "trainer.max_epochs=1")
    collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")
    train(params, snapshot=tmp_path / "snap", out_dir=tmp_path / "model")
    served = load_served_model(tmp_path / "model", allowed=params["allowed_targets"])
    features = dict.fromkeys(served.features, 1.0) | {"Cylinders": "4", "make": "ford"}
    with TestClient(create_app(params, served, NullStore())) as client:
        r = client.post("/predict", json={"features": {**features, "Acceleration": None}})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("features.Acceleration: missing value not allowed")
        assert client.post("/predict", json={"features": features}).status_code == 200


def test_slices_by_categorical_features_carry_the_oov_bucket(cars):
    root, params, _ = cars
    from closedloop.evaluation.slices import slice_columns, slice_names

    _, config = load_model(root / "model", params["allowed_targets"])
    production = read_split("production", root / "snap")
    enc = Encoding.from_config(config)
    slices = slice_columns(
        production, params["slices"], target="Origin", time_column="Year", encoding=enc
    )
    assert list(slices.columns) == ["slice_true_class", "slice_Cylinders", "slice_make"]
    assert (slices["slice_make"] == OOV).sum() > 0
    assert slice_names(params["slices"], ["Cylinders", "make"]) == [
        "true_class",
        "Cylinders",
        "make",
    ]


# ------------------------------------------------------------------------- sources
def test_duckdb_query_over_files_gives_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = collect(cars_project(tmp_path), out_dir=tmp_path / "a", data_dir=tmp_path / "d")
    table = cars_table()
    for decade, part in table.groupby(table["Year"].str[:3]):
        part.to_parquet(tmp_path / f"data/raw/cars-{decade}0s.parquet", index=False)
    params = other_source(
        tmp_path,
        "closedloop.data.sources.duckdb_query",
        "+dataset.source.sql='SELECT * FROM cars ORDER BY Year'",
        "+dataset.source.views={cars: 'data/raw/cars-*.parquet'}",
    )
    duck = collect(params, out_dir=tmp_path / "b", data_dir=tmp_path / "d")
    assert duck.dataset_rows.model_dump() | {"reasons": {}} == csv.dataset_rows.model_dump() | {
        "reasons": {}
    }
    assert duck.dataset_rows.kept == 401 and duck.splits["train"].rows == csv.splits["train"].rows


def test_sql_query_against_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True)
    with sqlite3.connect(tmp_path / "data/raw/shop.db") as con:
        cars_table().to_sql("cars", con, index=False)
    params = other_source(
        tmp_path,
        "closedloop.data.sources.sql_query",
        "+dataset.source.url=sqlite:///data/raw/shop.db",
        "+dataset.source.query='SELECT * FROM cars'",
    )
    record = collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")
    assert record.dataset_rows.kept == 401 and record.dataset_rows.quarantined == 5


BAD_SOURCES = {
    "no-file": (
        ["dataset.source.path=data/raw/car.csv"],
        "conf/dataset/cars.yaml: dataset.source.path: 'data/raw/car.csv' matches no file",
    ),
    "bad-sql": (
        [
            "dataset.source._target_=closedloop.data.sources.duckdb_query",
            "~dataset.source.path",
            "+dataset.source.sql='SELECT * FROM sale'",
        ],
        "conf/dataset/cars.yaml: dataset.source.sql: the query failed: Catalog Error: "
        "Table with name sale does not exist!",
    ),
    "database-down": (
        [
            "dataset.source._target_=closedloop.data.sources.sql_query",
            "~dataset.source.path",
            "+dataset.source.url='postgresql+psycopg://reader:s3cret@127.0.0.1:9/shop'",
            "+dataset.source.query='SELECT 1'",
        ],
        "conf/dataset/cars.yaml: dataset.source.query: failed on "
        "postgresql+psycopg://reader:***@127.0.0.1:9/shop: ",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_a_bad_source_is_one_line_naming_the_file_and_key(tmp_path, monkeypatch, case):
    overrides, expected = BAD_SOURCES[case]
    monkeypatch.chdir(tmp_path)
    cars_conf(tmp_path)
    params = compose(["dataset=cars", *overrides], tmp_path / "conf")
    with pytest.raises(DataError) as info:
        collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message, message
    assert "s3cret" not in message


def test_only_data_feedback_counts_as_feedback(tmp_path, monkeypatch):
    """A Parquet file elsewhere under data/, even one named as the exporter names its
    partitions, is the user's data, never feedback."""
    monkeypatch.chdir(tmp_path)
    params = cars_project(tmp_path)
    raw = tmp_path / "data/raw"
    cars_table().to_parquet(raw / "x.parquet")
    (raw / "date=1980-01-01").mkdir()
    cars_table().to_parquet(raw / "date=1980-01-01/part-predictions-1-2.parquet")
    record = collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")
    assert record.feedback_files == [] and record.feedback_ignored_files == []
    assert record.feedback.predictions_in == 0  # type: ignore[attr-defined]


def test_the_simulator_replays_categories_as_text_and_holes_as_null(cars):
    from closedloop.serving.simulate import production_rows

    root, *_ = cars
    rows = production_rows(root / "snap")
    assert len(rows) == 153
    json.dumps([r.features for r in rows], allow_nan=False)  # valid JSON: no NaN
    assert any(r.features["Horsepower"] is None for r in rows)
    assert {type(r.features["make"]) for r in rows} == {str}
    assert {r.features["Cylinders"] for r in rows} >= {"4", "5"}


def test_served_categories_and_holes_come_back_through_export_as_feedback(cars, tmp_path):
    """The server stores a category as the text the model read and a hole as null; export
    writes them; collect's reader takes them back under the dataset's policies."""
    from closedloop.capture.export import export
    from closedloop.capture.feedback import load
    from closedloop.capture.store import FeedbackStore

    root, params, _ = cars
    served = load_served_model(root / "model", allowed=params["allowed_targets"])
    db = tmp_path / "fb.db"
    features = {
        "Miles_per_Gallon": 30.0,
        "Horsepower": None,
        "Displacement": 100.0,
        "Weight_in_lbs": 2000,
        "Acceleration": 15.0,
        "Cylinders": 4,
        "make": "tesla",
    }
    store = FeedbackStore(f"sqlite:///{db}", batch_size=4, flush_interval_ms=5)
    with TestClient(create_app(params, served, store)) as client:
        for _ in range(3):
            rid = client.post("/predict", json={"features": features}).json()["request_id"]
            assert (
                client.post("/feedback", json={"request_id": rid, "label": "USA"}).status_code
                == 200
            )
    export(f"sqlite:///{db}", tmp_path / "data")
    fb = load(
        tmp_path / "data",
        params["dataset"],
        params["dataset"]["features"]["numeric"],
        ["Europe", "Japan", "USA"],
        categorical=["Cylinders", "make"],
        imputed=served.features,
    )
    assert len(fb.quarantine) == 0 and len(fb.labelled) == 3
    row = fb.labelled.iloc[0]
    assert row["make"] == "tesla" and row["Cylinders"] == "4" and np.isnan(row["Horsepower"])
    strict = load(
        tmp_path / "data",
        params["dataset"],
        params["dataset"]["features"]["numeric"],
        ["Europe", "Japan", "USA"],
        categorical=["Cylinders", "make"],
    )  # nothing imputed: the hole is a reason
    assert len(strict.labelled) == 0 and "x_Horsepower" in strict.quarantine["reason"].iloc[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["~dataset.missing.default"],
            "override '~dataset.missing.default': dataset.missing: needs a `default` policy "
            "(impute or reject)",
        ),
        (
            ["+dataset.missing.rooms=reject"],
            "override '+dataset.missing.rooms=reject': dataset.missing.rooms: is not a declared "
            "feature",
        ),
        (
            ["+dataset.missing.Horsepower=drop"],
            "override '+dataset.missing.Horsepower=drop': dataset.missing.Horsepower: must be one "
            "of 'impute' or 'reject', got 'drop'",
        ),
        (
            ["dataset.features.categorical=[make,Horsepower]"],
            "override 'dataset.features.categorical=[make,Horsepower]': "
            "dataset.features.categorical: 'Horsepower' is also listed under features.numeric",
        ),
    ],
    ids=["no-default", "not-a-feature", "unknown-policy", "both-types"],
)
def test_feature_types_and_policies_are_checked_at_compose(tmp_path, overrides, expected):
    from closedloop.errors import ConfigError

    cars_conf(tmp_path)
    with pytest.raises(ConfigError) as info:
        compose(["dataset=cars", *overrides], tmp_path / "conf")
    assert str(info.value).startswith(expected), str(info.value)


def test_a_slot_constant_in_train_stays_in_scale_for_unseen_values(cars):
    """The <oov> and <missing> slots are all zeros in train: standardising by their std
    (clamped to 1e-6) would turn a first unseen value into 1e6; they are centred only."""
    root, *_ = cars
    config = json.loads((root / "model/config.json").read_text())
    enc = Encoding.from_config(config)
    std = load_file(str(root / "model/model.safetensors"))["std"]
    oov_slot = len(enc.numeric) + len(enc.categorical["Cylinders"]) + 1  # Cylinders' <oov>
    assert float(std[oov_slot]) == 1.0
    served = load_served_model(root / "model", allowed=["closedloop.models."])
    row = pd.DataFrame([{f: 1.0 for f in enc.numeric} | {"Cylinders": "12", "make": "ford"}])
    x, _ = enc.transform(row)
    z = (served.model.mean.new_tensor(x) - served.model.mean) / served.model.std
    assert float(z.abs().max()) < 100
