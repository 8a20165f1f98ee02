"""The reference server: valid requests are logged; bad ones are refused and nothing is stored."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from closedloop.capture.store import FeedbackStore, PredictionRecord
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.serving.server import ServedModel, create_app, load_served_model
from closedloop.training.train import train
from tests.conftest import ROOT

GOOD = {"precipitation": 0.0, "temp_max": 12.8, "temp_min": 5.0, "wind": 4.7}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    params = compose(["trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    collect(params, out_dir=tmp / "snap", data_dir=tmp)
    import os

    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        train(params, snapshot=tmp / "snap", out_dir=tmp / "model")
    finally:
        os.chdir(cwd)
    return tmp / "model"


@pytest.fixture
def server(model_dir, tmp_path):
    params = compose(["trainer=cpu"], conf_dir=ROOT / "conf")
    db = tmp_path / "fb.db"
    store = FeedbackStore(
        f"sqlite:///{db}", batch_size=16, flush_interval_ms=5, personal={}, hash_key=None
    )
    served: ServedModel = load_served_model(model_dir, allowed=params["allowed_targets"])
    with TestClient(create_app(params, served, store)) as client:
        yield client, db


def rows(db, table="predictions") -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def test_predict_feedback_and_health(server):
    client, db = server
    r = client.post("/predict", json={"features": GOOD, "event_time": "2014-01-01"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"request_id", "prediction", "probabilities", "model_version"}
    assert body["model_version"].startswith("candidate-")
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
    assert rows(db) == 1  # acknowledged means stored
    r = client.post("/feedback", json={"request_id": body["request_id"], "label": "rain"})
    assert r.status_code == 200 and rows(db, "feedback") == 1
    health = client.get("/healthz").json()
    assert health["source"] == "candidate" and health["store"]["ok"]


@pytest.mark.parametrize(
    ("payload", "status", "names"),
    [
        (b'{"features": {', 422, "JSON"),
        ({"features": {k: v for k, v in GOOD.items() if k != "wind"}}, 422, "wind"),
        ({"features": {**GOOD, "humidity": 3.0}}, 422, "humidity"),
        ({"features": {**GOOD, "wind": "strong"}}, 422, "wind"),
        (
            b'{"features": {"precipitation": NaN, "temp_max": 1, "temp_min": 1, "wind": 1}}',
            422,
            "precipitation",
        ),
        (
            b'{"features": {"precipitation": Infinity, "temp_max": 1, "temp_min": 1, "wind": 1}}',
            422,
            "precipitation",
        ),
        ({"features": {**GOOD, "note": "x" * 100_000}}, 413, ""),
    ],
    ids=["malformed", "missing", "extra", "wrong-type", "nan", "inf", "huge"],
)
def test_bad_predict_requests_are_refused_and_not_stored(server, payload, status, names):
    client, db = server
    if isinstance(payload, bytes):
        r = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    else:
        r = client.post("/predict", json=payload)
    assert r.status_code == status, r.text
    assert names in r.text
    assert rows(db) == 0


def test_feedback_for_unknown_request_is_404_and_not_stored(server):
    client, db = server
    r = client.post("/feedback", json={"request_id": "nobody", "label": "sun"})
    assert r.status_code == 404
    r = client.post("/feedback", json={"request_id": "x", "label": "hail"})
    assert r.status_code in (404, 422)
    assert rows(db, "feedback") == 0


def test_personal_fields_never_reach_the_store_raw(tmp_path):
    import datetime as dt

    db = tmp_path / "fb.db"
    store = FeedbackStore(
        f"sqlite:///{db}",
        batch_size=4,
        flush_interval_ms=5,
        personal={"email": "hash", "phone": "drop"},
        hash_key=b"secret",
    )
    store.log_prediction(
        PredictionRecord(
            "r1",
            dt.datetime.now(dt.timezone.utc),
            "v1",
            {"email": "ada@example.org", "phone": "+44 20 7946 0000", "wind": 4.7},
            "sun",
            {"sun": 1.0},
            1.0,
        )
    )
    store.flush()
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("fb.db*"))
    assert b"ada@example.org" not in raw and b"7946" not in raw
    with sqlite3.connect(db) as conn:
        features = conn.execute("select features from predictions").fetchone()[0]
    assert "ada@" not in features and "phone" not in features and "email" in features
