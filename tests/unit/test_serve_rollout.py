"""The server under a rollout: shadow and canary through the real app and store, the circuit
breaker, the store's migration, and the decision read back from the server's own records."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sqlite3

import pytest
import torch
from fastapi.testclient import TestClient

from closedloop.capture.export import export
from closedloop.capture.store import FeedbackStore
from closedloop.config import compose
from closedloop.errors import ConfigError
from closedloop.models.persist import predict_proba
from closedloop.rollout.assign import assign
from closedloop.rollout.decide import decide, select, srm_check
from closedloop.rollout.records import read_records
from closedloop.serving.rollout import BREAKER_OPEN
from closedloop.serving.server import (
    ServedModel,
    create_app,
    load_rollout_candidate,
    load_served_model,
)
from tests.conftest import ROOT, store_rows
from tests.fixtures import trained_model

GOOD = {"precipitation": 0.0, "temp_max": 12.8, "temp_min": 5.0, "wind": 4.7}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return trained_model(tmp_path_factory.mktemp("rollout"))


def rollout_params(mode: str, *overrides: str) -> dict:
    return compose(["trainer=cpu", f"rollout={mode}", *overrides], conf_dir=ROOT / "conf")


@pytest.fixture(scope="module")
def champion(model_dir) -> ServedModel:
    served = load_served_model(model_dir, allowed=["closedloop.models.", "torch.nn."])
    return dataclasses.replace(served, version="v1.0.0", source="registry")


class Always(torch.nn.Module):
    """A deliberately different candidate: it always predicts one class."""

    def __init__(self, k: int, index: int):
        super().__init__()
        self.k, self.index = k, index

    def forward(self, x):
        out = torch.zeros(len(x), self.k)
        out[:, self.index] = 10.0
        return out


class Broken(torch.nn.Module):
    """A candidate whose forward raises (the injected failure); counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        raise RuntimeError("injected failure")


class FakeClock:
    """The app's clock (a test seam): time moves only when a model says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Slow(torch.nn.Module):
    """Wraps a model; each forward advances the fake clock by ``ms`` (no real sleep)."""

    def __init__(self, inner, clock: FakeClock, ms: float):
        super().__init__()
        self.inner, self.clock, self.ms, self.calls = inner, clock, ms, 0

    def forward(self, x):
        self.calls += 1
        self.clock.now += self.ms / 1000
        return self.inner(x)


def as_candidate(champion: ServedModel, model: torch.nn.Module) -> ServedModel:
    return dataclasses.replace(champion, model=model, version="candidate-test", source="candidate")


def client_for(params, champion, candidate, db, **kwargs) -> TestClient:
    store = FeedbackStore(f"sqlite:///{db}", batch_size=64, flush_interval_ms=5)
    return TestClient(create_app(params, champion, store, candidate, **kwargs))


def predictions(db) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from predictions order by seq")]


def features(i: int) -> dict:
    return {**GOOD, "temp_max": -5.0 + (i % 40), "precipitation": float(i % 7)}


# ----------------------------------------------------------------------- shadow
def test_shadow_logs_both_predictions_and_the_caller_sees_only_the_champions(champion, tmp_path):
    snow = champion.classes.index("snow")
    candidate = as_candidate(champion, Always(len(champion.classes), snow))
    db = tmp_path / "fb.db"
    answers = []
    with client_for(rollout_params("shadow"), champion, candidate, db) as client:
        for i in range(40):
            r = client.post("/predict", json={"features": features(i)})
            assert r.status_code == 200
            answers.append((features(i), r.json()))
        health = client.get("/healthz").json()["rollout"]
    assert health == {
        "mode": "shadow",
        "share": 0.0,
        "champion": "v1.0.0",
        "candidate": "candidate-test",
        "breaker": "closed",
        "reason": None,
    }
    own = predict_proba(champion.model, [[f[n] for n in champion.features] for f, _ in answers])
    for (_, body), probs in zip(answers, own.tolist(), strict=True):
        assert body["model_version"] == "v1.0.0" and body["arm"] == "champion"
        assert body["probabilities"] == pytest.approx(
            dict(zip(champion.classes, probs, strict=True))
        )
    assert any(body["prediction"] != "snow" for _, body in answers)  # the two really differ
    rows = predictions(db)
    assert [r["request_id"] for r in rows] == [b["request_id"] for _, b in answers]
    for row, (_, body) in zip(rows, answers, strict=True):
        assert row["prediction"] == body["prediction"] and row["model_version"] == "v1.0.0"
        assert (row["arm"], row["share"], row["shadow_prediction"]) == ("champion", 0.0, "snow")
        assert row["shadow_latency_ms"] > 0 and row["shadow_error"] is None
        assert row["error"] is None


# ----------------------------------------------------------------------- canary
def test_canary_names_the_answering_model_and_its_arms_pass_the_srm_check(champion, tmp_path):
    params = rollout_params("canary", "rollout.shares=[0.1,0.5,1.0]", "rollout.share=0.1")
    snow = champion.classes.index("snow")
    candidate = as_candidate(champion, Always(len(champion.classes), snow))
    db = tmp_path / "fb.db"
    salt = params["rollout"]["assignment"]["salt"]
    with client_for(params, champion, candidate, db) as client:
        bodies = [client.post("/predict", json={"features": GOOD}).json() for _ in range(2000)]
    for body in bodies:
        arm = assign(body["request_id"], 0.1, salt)
        assert body["arm"] == arm
        assert body["model_version"] == ("candidate-test" if arm == "candidate" else "v1.0.0")
        if arm == "candidate":
            assert body["prediction"] == "snow"
    rows = predictions(db)
    assert len(rows) == 2000 and {r["share"] for r in rows} == {0.1}
    by_id = {b["request_id"]: b for b in bodies}
    for row in rows:
        assert row["arm"] == by_id[row["request_id"]]["arm"]
        assert row["model_version"] == by_id[row["request_id"]]["model_version"]
        # the champion runs in shadow on the candidate's requests (the disagreement guardrail)
        assert (row["shadow_prediction"] is not None) == (row["arm"] == "candidate")
    export(f"sqlite:///{db}", tmp_path / "data")
    records = read_records(tmp_path / "data").frame
    srm = srm_check(select(records, params["rollout"]), 0.1, params["rollout"]["srm_alpha"])
    assert srm.champion + srm.candidate == 2000 and 100 < srm.candidate < 300
    assert srm.passed, srm


# ---------------------------------------------------------------------- breaker
def test_the_breaker_trips_on_candidate_errors_and_the_champion_keeps_answering(
    champion, tmp_path, caplog
):
    params = rollout_params("canary", "rollout.share=0.5")
    broken = Broken()
    candidate = as_candidate(champion, broken)
    db = tmp_path / "fb.db"
    limit = params["rollout"]["breaker"]["min_requests"]
    with (
        caplog.at_level(logging.ERROR, logger="closedloop.serve"),
        client_for(params, champion, candidate, db) as client,
    ):
        answers = [client.post("/predict", json={"features": GOOD}) for _ in range(200)]
        health = client.get("/healthz")
    assert [r.status_code for r in answers] == [200] * 200
    assert {r.json()["model_version"] for r in answers} == {"v1.0.0"}  # never the candidate
    assert {r.json()["arm"] for r in answers} == {"champion"}
    # it opened at its min_requests and the candidate got no request after that
    assert broken.calls == limit
    assert health.status_code == 200
    rollout = health.json()["rollout"]
    assert (
        rollout["breaker"] == "open"
        and f"{limit} of the candidate's last {limit}" in rollout["reason"]
    )
    lines = [r.getMessage() for r in caplog.records if "circuit breaker open" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    rows = [r for r in predictions(db) if r["arm"] == "candidate"]
    assert [r["error"] for r in rows[:limit]] == ["RuntimeError: injected failure"] * limit
    assert {r["error"] for r in rows[limit:]} == {BREAKER_OPEN} and len(rows) > limit


def test_the_breaker_trips_on_latency_over_the_budget_through_the_clock_seam(champion, tmp_path):
    params = rollout_params("shadow")
    budget = params["rollout"]["breaker"]["latency_budget_ms"]
    clock = FakeClock()
    slow = Slow(champion.model, clock, ms=budget * 4)
    candidate = as_candidate(champion, slow)
    db = tmp_path / "fb.db"
    with client_for(params, champion, candidate, db, clock=clock) as client:
        answers = [client.post("/predict", json={"features": GOOD}) for _ in range(60)]
        rollout = client.get("/healthz").json()["rollout"]
    assert [r.status_code for r in answers] == [200] * 60
    assert rollout["breaker"] == "open" and f"took over {budget:g} ms" in rollout["reason"]
    limit = params["rollout"]["breaker"]["min_requests"]
    assert slow.calls == limit
    rows = predictions(db)
    assert all(r["shadow_latency_ms"] == pytest.approx(budget * 4) for r in rows[:limit])
    assert all(r["latency_ms"] == 0.0 for r in rows)  # the champion's own time, not the candidate's
    assert {r["shadow_error"] for r in rows[limit:]} == {BREAKER_OPEN}


def test_shadow_candidate_failures_reach_the_decision_as_harm(champion, tmp_path):
    """A shadow candidate that always fails: the requests still succeed, and the decision
    read from the exported records fails the step on the error rate (rolls back)."""
    params = rollout_params(
        "shadow", "rollout.breaker.min_requests=200", "rollout.breaker.window=200"
    )
    candidate = as_candidate(champion, Broken())
    db = tmp_path / "fb.db"
    with client_for(params, champion, candidate, db) as client:
        answers = [client.post("/predict", json={"features": features(i)}) for i in range(150)]
    assert {r.status_code for r in answers} == {200}
    export(f"sqlite:///{db}", tmp_path / "data")
    loaded = read_records(tmp_path / "data")
    report = decide(loaded.frame, params["rollout"], loaded.counts)
    assert report.exposure["paired"] == 150
    assert report.outcome == "fail" and report.action == "rollback"
    error_rate = next(g for g in report.guardrails if g.metric == "error_rate")
    assert error_rate.status == "harm" and error_rate.candidate == 1.0


# ----------------------------------------------------------------- loading
def test_a_candidate_whose_weights_are_not_its_cards_is_refused(model_dir, tmp_path):
    allowed = ["closedloop.models.", "torch.nn."]
    assert load_rollout_candidate(model_dir, allowed).version.startswith("candidate-")
    tampered = tmp_path / "candidate"
    shutil.copytree(model_dir, tampered)
    card = json.loads((tampered / "card.json").read_text())
    card["weights_sha256"] = "0" * 64
    (tampered / "card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="not the model that was trained and judged"):
        load_rollout_candidate(tampered, allowed)


def test_an_assignment_key_the_requests_do_not_send_is_refused(champion, tmp_path):
    params = rollout_params("canary", "rollout.assignment.key=user")
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.db'}")
    try:
        with pytest.raises(ConfigError, match=r"rollout\.assignment\.key: 'user'"):
            create_app(params, champion, store, as_candidate(champion, champion.model))
    finally:
        store.close()


# ------------------------------------------------------------------- the store
OLD_PREDICTIONS = """CREATE TABLE predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id VARCHAR(64) NOT NULL UNIQUE,
    ts BIGINT NOT NULL, model_version VARCHAR(128) NOT NULL, event_time VARCHAR(64),
    features TEXT NOT NULL, prediction VARCHAR(128) NOT NULL, probabilities TEXT NOT NULL,
    latency_ms FLOAT NOT NULL)"""


def test_an_older_store_gains_the_rollout_columns_and_keeps_its_rows(champion, store_url, tmp_path):
    old = OLD_PREDICTIONS
    if store_url.startswith("postgresql"):
        old = old.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    store_rows(store_url, old)
    store_rows(
        store_url,
        "INSERT INTO predictions (request_id, ts, model_version, features, prediction, "
        "probabilities, latency_ms) VALUES ('old-1', 1600000000000000, 'v0', '{}', 'sun', "
        "'{\"sun\": 1.0}', 1.5)",
    )
    params = rollout_params("shadow")
    store = FeedbackStore(store_url, batch_size=8, flush_interval_ms=5)
    candidate = as_candidate(champion, champion.model)
    with TestClient(create_app(params, champion, store, candidate)) as client:
        assert client.post("/predict", json={"features": GOOD}).status_code == 200
    rows = store_rows(
        store_url, "SELECT request_id, arm, shadow_prediction FROM predictions ORDER BY seq"
    )
    assert rows[0] == ("old-1", None, None)
    assert rows[1][1] == "champion" and rows[1][2] in champion.classes
    moved = export(store_url, tmp_path / "data")
    assert moved["predictions"] == 2
    frame = read_records(tmp_path / "data").frame
    assert frame["arm"].tolist() == [None, "champion"]


def test_openapi_documents_the_arm_and_the_rollout_health(champion, tmp_path):
    params = rollout_params("canary")
    candidate = as_candidate(champion, champion.model)
    with client_for(params, champion, candidate, tmp_path / "fb.db") as client:
        doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    ok = doc["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    response = schemas[ok["schema"]["$ref"].rsplit("/", 1)[1]]
    assert "arm" in response["required"]
    assert response["properties"]["arm"]["enum"] == ["champion", "candidate"]
    assert set(schemas["RolloutHealth"]["required"]) >= {"mode", "share", "breaker", "reason"}
