"""The reference server: valid requests are logged; bad, unauthenticated or hostile ones are
refused and nothing is stored; a database that is down is a 503 that tells no internals."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from closedloop.capture.export import export
from closedloop.capture.feedback import load
from closedloop.capture.store import FeedbackStore, PredictionRecord
from closedloop.config import compose, dump
from closedloop.serving.server import ServedModel, create_app, load_served_model
from tests.conftest import ROOT, postgres_database, store_rows
from tests.fixtures import trained_model

GOOD = {"precipitation": 0.0, "temp_max": 12.8, "temp_min": 5.0, "wind": 4.7}
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
TOKENS = "CLOSEDLOOP_API_TOKENS"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return trained_model(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def params():
    return compose(["trainer=cpu"], conf_dir=ROOT / "conf")


def open_client(params, model_dir, url: str, **store_args):
    store = FeedbackStore(url, batch_size=16, flush_interval_ms=5, **store_args)
    served: ServedModel = load_served_model(model_dir, allowed=params["allowed_targets"])
    return TestClient(create_app(params, served, store))


@pytest.fixture
def server(params, model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(TOKENS, raising=False)
    db = tmp_path / "fb.db"
    with open_client(params, model_dir, f"sqlite:///{db}") as client:
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
        ({"features": {**GOOD, "wind": True}}, 422, "wind"),
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
        ({"features": {**GOOD, "wind": 1e39}}, 422, "wind"),  # finite, beyond float32
        (
            b'{"features": {"precipitation": 1' + b"0" * 400 + b', "temp_max": 1, "temp_min": 1, '
            b'"wind": 1}}',
            422,
            "precipitation",
        ),
        (b"[" * 50_000, 422, "JSON"),  # nested deeper than any parser's recursion limit
        ({"features": GOOD, "event_time": "2200-01-01"}, 422, "event_time"),
        ({"features": GOOD, "event_time": "1900-01-01"}, 422, "event_time"),
        ({"features": GOOD, "event_time": "yesterday"}, 422, "event_time"),
        ({"features": GOOD, "extra": 1}, 422, "extra"),
        ({"features": {**GOOD, "note": "x" * 100_000}}, 413, ""),
    ],
    ids=[
        "malformed",
        "missing",
        "extra-feature",
        "wrong-type",
        "bool",
        "nan",
        "inf",
        "float32-overflow",
        "huge-integer",
        "deep-nesting",
        "future-event",
        "ancient-event",
        "not-a-date",
        "extra-field",
        "huge",
    ],
)
def test_bad_predict_requests_are_refused_and_not_stored(server, payload, status, names):
    client, db = server
    if isinstance(payload, bytes):
        r = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    else:
        r = client.post("/predict", json=payload)
    assert r.status_code == status, r.text
    assert names in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert rows(db) == 0


def test_a_body_that_is_not_json_is_415(server):
    client, db = server
    r = client.post("/predict", content=json.dumps({"features": GOOD}))  # no content type
    assert r.status_code == 415, r.text
    r = client.post("/feedback", content=b"request_id=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and rows(db) == 0 and rows(db, "feedback") == 0


def test_feedback_for_unknown_request_is_404_and_not_stored(server):
    client, db = server
    r = client.post("/feedback", json={"request_id": "nobody", "label": "sun"})
    assert r.status_code == 404
    r = client.post("/feedback", json={"request_id": "x", "label": "hail"})
    assert r.status_code == 422 and "label" in r.json()["detail"]
    assert rows(db, "feedback") == 0


ANSWERS = [
    {"label": "rain"},
    {"label": "rain", "action": "correct"},
    {"label": "sun", "action": "accept"},
    {"action": "accept"},
    {"action": "reject"},
    {"label": "fog", "action": "reject"},
    {"action": "correct"},
    {},
    {"label": "hail"},
    {"action": "maybe"},
]


def test_server_and_collect_apply_the_same_feedback_rule(server, tmp_path):
    """Whatever /feedback acknowledges, collect keeps; whatever it refuses is never stored.
    (A label-less reject was a 200 here and always quarantined by collect.)"""
    client, db = server
    verdicts = {}
    for answer in ANSWERS:
        r = client.post("/predict", json={"features": GOOD, "event_time": "2014-02-01"})
        rid = r.json()["request_id"]
        verdicts[rid] = client.post("/feedback", json={"request_id": rid, **answer}).status_code
        assert verdicts[rid] in (200, 422), (answer, verdicts[rid])
    acknowledged = {rid for rid, status in verdicts.items() if status == 200}
    assert len(acknowledged) == 6 and rows(db, "feedback") == 6
    client.close()  # flushes the store
    export(f"sqlite:///{db}", tmp_path / "data")
    fb = load(tmp_path / "data", {"target": "weather"}, list(GOOD), CLASSES)
    assert fb.counts["feedback_in"] == fb.counts["feedback_kept"] == 6
    assert fb.counts["quarantined"] == 0
    assert fb.counts["labelled_rows"] == 5  # a reject without a label gives none


def test_tokens_are_required_once_configured(params, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKENS, "tok-a, tok-b")
    db = tmp_path / "fb.db"
    with open_client(params, model_dir, f"sqlite:///{db}") as client:
        body = {"features": GOOD}
        for headers in ({}, {"Authorization": "Bearer tok-c"}, {"Authorization": "tok-a"}):
            r = client.post("/predict", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = client.post("/feedback", json={"request_id": "x", "label": "sun"}, headers=headers)
            assert r.status_code == 401
        assert rows(db) == 0 and rows(db, "feedback") == 0
        r = client.post("/predict", json=body, headers={"Authorization": "Bearer tok-b"})
        assert r.status_code == 200 and rows(db) == 1


def closedloop_serve(cwd, *args):
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "serve", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_public_address_without_tokens_is_refused(model_dir, monkeypatch):
    monkeypatch.delenv(TOKENS, raising=False)
    try:
        proc = closedloop_serve(model_dir.parent, "--host", "0.0.0.0", "--model-dir", "model")
    except subprocess.TimeoutExpired:
        pytest.fail("the server bound 0.0.0.0 with no tokens configured")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "0.0.0.0" in lines[0] and TOKENS in lines[0], proc.stderr


def test_serve_never_prints_the_store_password(model_dir):
    url = "postgresql+psycopg://closedloop:hunter2@127.0.0.1:1/feedback"
    proc = closedloop_serve(model_dir.parent, "--model-dir", "model", "--store-url", url)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr and "127.0.0.1" in lines[-1]


def test_personal_fields_work_end_to_end(params, model_dir, tmp_path, monkeypatch):
    """user_id (hashed) and email (dropped) are no model features: /predict takes them, the
    store never sees them raw, export carries the hash, and collect needs neither."""
    monkeypatch.delenv(TOKENS, raising=False)
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY", "k" * 32)
    personal = {"user_id": "hash", "email": "drop"}
    params = copy.deepcopy(params)
    params["dataset"]["personal"] = personal
    db = tmp_path / "fb.db"
    store_args = {"personal": personal, "hash_key": b"k" * 32}
    with open_client(params, model_dir, f"sqlite:///{db}", **store_args) as client:
        features = {**GOOD, "user_id": "u-1234", "email": "ada@example.org"}
        r = client.post("/predict", json={"features": features, "event_time": "2014-03-01"})
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        assert client.post("/feedback", json={"request_id": rid, "label": "fog"}).status_code == 200
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("fb.db*"))
    assert b"u-1234" not in raw and b"ada@example.org" not in raw
    export(f"sqlite:///{db}", tmp_path / "data")
    part = next((tmp_path / "data").rglob("part-predictions-*.parquet"))
    import pandas as pd

    exported = pd.read_parquet(part)
    assert len(exported.x_user_id[0]) == 64 and "x_email" not in exported.columns
    fb = load(tmp_path / "data", {"target": "weather"}, list(GOOD), CLASSES)
    assert fb.counts["quarantined"] == 0 and fb.counts["labelled_rows"] == 1


def test_a_personal_model_feature_is_refused_at_start(params, model_dir, tmp_path):
    params = copy.deepcopy(params)
    params["dataset"]["personal"] = {"wind": "drop"}
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.db'}", personal={"wind": "drop"})
    from closedloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dataset\.personal\.wind: .*model feature"):
        create_app(params, load_served_model(model_dir, allowed=params["allowed_targets"]), store)
    store.close()


INTERNALS = ("127.0.0.1", "5432", "psycopg", "sqlite", "fb.db", "Traceback", "closedloop_test")


def test_a_database_that_is_down_is_503_everywhere_with_no_internals(
    params, model_dir, tmp_path, monkeypatch
):
    """SQLite: the database file is replaced by a directory nobody can open as one."""
    monkeypatch.delenv(TOKENS, raising=False)
    db = tmp_path / "fb.db"
    with open_client(params, model_dir, f"sqlite:///{db}") as client:
        rid = client.post("/predict", json={"features": GOOD}).json()["request_id"]
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"fb.db{suffix}").rename(tmp_path / f"gone{suffix}")
        db.mkdir()
        client.app.state.store.engine.dispose()
        answers = [
            client.post("/feedback", json={"request_id": rid, "label": "sun"}),
            client.get("/healthz"),
        ]
        for r in answers:
            assert r.status_code == 503, r.text
            assert not any(word in r.text for word in INTERNALS), r.text


def test_a_postgres_that_is_down_is_503_everywhere_with_no_internals(
    params, model_dir, monkeypatch
):
    """PostgreSQL: the database stops taking connections and its sessions are ended."""
    monkeypatch.delenv(TOKENS, raising=False)
    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        with open_client(params, model_dir, url) as client:
            rid = client.post("/predict", json={"features": GOOD}).json()["request_id"]
            admin = os.environ["CLOSEDLOOP_TEST_POSTGRES_URL"]
            store_rows(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            store_rows(
                admin,
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
            )
            client.app.state.store.engine.dispose()
            answers = [
                client.post("/predict", json={"features": GOOD}),
                client.post("/feedback", json={"request_id": rid, "label": "sun"}),
                client.get("/healthz"),
            ]
            for r in answers:
                assert r.status_code == 503, r.text
                assert not any(word in r.text for word in INTERNALS), r.text
            store_rows(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_openapi_documents_the_real_bodies_and_errors(server):
    client, _ = server
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    predict = doc["paths"]["/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    features = schemas[body["$ref"].rsplit("/", 1)[1]]["properties"]["features"]
    features = schemas[features["$ref"].rsplit("/", 1)[1]]
    assert sorted(features["required"]) == sorted(GOOD)
    assert features["additionalProperties"] is False
    assert {"413", "415", "422", "503"} <= set(predict["responses"])
    feedback = doc["paths"]["/feedback"]["post"]
    assert {"404", "413", "415", "422", "503"} <= set(feedback["responses"])
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(schemas[ok["$ref"].rsplit("/", 1)[1]]["required"]) == {
        "request_id",
        "prediction",
        "probabilities",
        "model_version",
    }


def test_personal_fields_in_records_are_never_stored_raw(tmp_path):
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


# ----------------------------------------------------------------- fuzzing the API
FUZZ_TOKEN = "fuzz-token"


@pytest.fixture(scope="module", params=["off", "canary"])
def fuzzed(request, model_dir):
    """A real server (uvicorn, its own process) with tokens configured, its SQLite store, and
    one request id it has answered (for /feedback). In-process ASGI calls would run the app's
    lifespan per call, and its shutdown closes the store. Once without a rollout, once as a
    canary at 50% (the candidate: the same model, through the rollout's loader)."""
    import signal

    import httpx

    from closedloop.serving.server import spawn

    cwd = model_dir.parent / f"fuzz-{request.param}"
    cwd.mkdir(exist_ok=True)
    overrides = [] if request.param == "off" else ["rollout=canary", "rollout.share=0.5"]
    (cwd / "params.yaml").write_text(
        dump(compose(["trainer=cpu", *overrides], conf_dir=ROOT / "conf"))
    )
    db = cwd / "fuzz.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), TOKENS: FUZZ_TOKEN}
    args = ["--model-dir", str(model_dir), "--store-url", f"sqlite:///{db}"]
    if request.param == "canary":
        args += ["--candidate-dir", str(model_dir)]
    proc, url = spawn(args, cwd=cwd, env=env, timeout=60)
    try:
        auth = {"Authorization": f"Bearer {FUZZ_TOKEN}"}
        answer = httpx.post(f"{url}/predict", json={"features": GOOD}, headers=auth).json()
        yield url, db, answer["request_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize(
    ("operation", "mode"),
    [
        ("POST /predict", "positive"),
        ("POST /predict", "negative"),
        ("POST /feedback", "positive"),
        ("POST /feedback", "negative"),
        ("GET /healthz", "positive"),
    ],
)
def test_fuzzed_requests_get_no_5xx_match_the_schema_and_store_only_on_2xx(operation, mode, fuzzed):
    """schemathesis, from /openapi.json: valid (positive) and invalid (negative) requests,
    50 each, seeded. Every answer is documented and matches its schema, none is a 5xx, no
    invalid request is accepted, and a refusal leaves no row (a 2xx leaves exactly one).

    Hypothesis drives schemathesis' strategies directly: its pytest plugin (`parametrize`,
    `from_fixture`) reads a private pytest attribute that pytest 9 no longer has.
    """
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    url, db, rid = fuzzed
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    api = schema.find_operation_by_label(operation)
    strategy = api.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    seen: set[int] = set()

    @settings(
        max_examples=50,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case):
        body = case.body
        if api.path == "/feedback" and isinstance(body, dict) and "request_id" in body:
            body["request_id"] = rid  # an id the store knows: the rule itself is exercised
        before = rows(db) + rows(db, "feedback")
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {FUZZ_TOKEN}"})
        case.validate_response(response, checks=checks)
        seen.add(response.status_code)
        stored = rows(db) + rows(db, "feedback") - before
        assert stored == (1 if response.status_code == 200 and case.method == "POST" else 0)

    one()
    assert seen  # something was sent, and answered


def test_the_server_keeps_the_collector_off_its_requests(model_dir, monkeypatch):
    """Full collections walk every tracked object; the server's startup heap (torch, pandas,
    the model, the app) is frozen out of them before the first request, and young
    collections wait for far more than Python's 700 net allocations (make bench measures
    what each saves with logging on)."""
    import gc

    import uvicorn

    from closedloop.serving.server import run_server

    seen = {}
    monkeypatch.chdir(model_dir.parent)  # its params.yaml
    monkeypatch.setattr(
        uvicorn,
        "run",
        lambda app, **kw: seen.update(frozen=gc.get_freeze_count(), young=gc.get_threshold()[0]),
    )
    threshold = gc.get_threshold()
    try:
        run_server(model_dir=model_dir, no_logging=True)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert seen["frozen"] > 100_000, seen
    assert seen["young"] >= 10_000, seen
