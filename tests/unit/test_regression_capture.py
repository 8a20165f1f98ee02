"""Capture for a regressor: the server answers a number (probabilities null), feedback carries
a numeric label, and the one feedback rule (server and collect) takes finite numbers only."""

from __future__ import annotations

import os
import sqlite3

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from closedloop.capture.export import export
from closedloop.capture.feedback import load
from closedloop.capture.rules import NumericFeedbackRule, rule_for
from closedloop.capture.store import FeedbackStore
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.serving.server import create_app, load_served_model
from closedloop.training.train import train
from tests.conftest import ROOT

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
PATIENT = dict(
    zip(FEATURES, [59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0], strict=True)
)


@pytest.fixture(scope="module")
def params():
    return compose(
        ["dataset=diabetes", "trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf"
    )


@pytest.fixture(scope="module")
def model_dir(params, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regression")
    cwd = os.getcwd()
    os.chdir(tmp)  # collect and train write reports/ under the working directory
    try:
        collect(params, out_dir=tmp / "snap", data_dir=tmp)
        train(params, snapshot=tmp / "snap", out_dir=tmp / "model")
    finally:
        os.chdir(cwd)
    return tmp / "model"


@pytest.fixture
def server(params, model_dir, tmp_path):
    db = tmp_path / "fb.db"
    store = FeedbackStore(f"sqlite:///{db}", batch_size=16, flush_interval_ms=5)
    served = load_served_model(model_dir, allowed=params["allowed_targets"])
    with TestClient(create_app(params, served, store)) as client:
        yield client, db


def test_predict_returns_a_number_and_no_probabilities(server):
    client, db = server
    r = client.post("/predict", json={"features": PATIENT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"request_id", "prediction", "probabilities", "model_version"}
    assert isinstance(body["prediction"], float) and body["probabilities"] is None
    with sqlite3.connect(db) as conn:
        stored, probs = conn.execute("select prediction, probabilities from predictions").fetchone()
    assert float(stored) == body["prediction"] and probs == "{}"
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "number" in str(schema["FeedbackRequest"]["properties"]["label"])


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('"severe"', "label: expected a number"),
        ("true", "label:"),
        ("1e999", "label: expected a finite number"),
        ("[151]", "label:"),
    ],
)
def test_feedback_refuses_what_is_not_a_finite_number(server, raw, words):
    client, db = server
    rid = client.post("/predict", json={"features": PATIENT}).json()["request_id"]
    body = f'{{"request_id": "{rid}", "label": {raw}}}'
    r = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from feedback").fetchone()[0] == 0


def test_numeric_feedback_is_exported_and_collected_as_numbers(server, tmp_path):
    client, db = server
    truth = [151.0, 75, 206.5]
    for label in truth:
        rid = client.post("/predict", json={"features": PATIENT}).json()["request_id"]
        r = client.post("/feedback", json={"request_id": rid, "label": label})
        assert r.status_code == 200 and r.json()["label"] == label
    accepted = client.post("/predict", json={"features": PATIENT}).json()
    client.post("/feedback", json={"request_id": accepted["request_id"], "action": "accept"})
    export(f"sqlite:///{db}", tmp_path / "data")
    ds = {"target": "progression", "time_column": None}
    fb = load(tmp_path / "data", ds, FEATURES, [], task="regression")
    got = fb.labelled["progression"].tolist()
    # An accepted prediction's label is the prediction: the same number, through text and back.
    assert sorted(got) == sorted([*map(float, truth), accepted["prediction"]])
    assert fb.labelled["progression"].dtype == float
    assert fb.counts["quarantined"] == 0


def test_the_rule_takes_finite_numbers_one_at_a_time_and_by_column():
    rule = rule_for("regression", [])
    assert isinstance(rule, NumericFeedbackRule)
    assert rule.problem(151.5, None) is None and rule.problem("151.5", "correct") is None
    assert "finite number" in rule.problem("abc", None)
    assert "finite number" in rule.problem(float("inf"), None)
    assert "finite number" in rule.problem(True, None)
    assert rule.problem(None, "reject") is None and "missing" in rule.problem(None, None)
    labels = pa.array(["151.5", "abc", "1e999", None, "-3e2", "nan"], pa.string())
    actions = pa.array([None, None, None, "reject", "correct", None], pa.string())
    assert rule.valid(labels, actions).to_pylist() == [True, False, False, True, True, False]
    # Collect's column form and the server's one-at-a-time form agree on every label.
    for label, action, ok in zip(
        labels.to_pylist(),
        actions.to_pylist(),
        rule.valid(labels, actions).to_pylist(),
        strict=True,
    ):
        assert (rule.problem(label, action) is None) == ok, label
