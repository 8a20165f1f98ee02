"""The reference prediction server (`make serve`): the production model behind a small HTTP API.

    POST /predict   {"features": {...}, "event_time": "2014-03-01"?}
                    -> {"request_id", "prediction", "probabilities", "model_version"}
    POST /feedback  {"request_id", "label", "action"?: accept|correct|reject, "source"?}
    GET  /healthz   -> model version, where it came from, feedback store state

A 2xx means the record is committed to the feedback store (group commit, see closedloop.capture.store),
so a crash never loses an acknowledged prediction or feedback. Anything refused (4xx, 5xx) is
not stored. Bad input gets one line naming the field: 422 for a bad field or malformed JSON,
413 for a body over serve.max_body_bytes, 404 for feedback on an unknown request id, 503 when
the store cannot commit.

    closedloop serve [--host H] [--port P] [--store-url URL] [--model-dir DIR] [--no-logging]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from closedloop.capture.store import (
    ACTIONS,
    FeedbackRecord,
    FeedbackStore,
    NullStore,
    PredictionRecord,
)
from closedloop.config import load_params
from closedloop.errors import ConfigError, StoreError
from closedloop.io import sha256_file
from closedloop.models.persist import load_model, predict_proba
from closedloop.paths import CANDIDATE_DIR, WEIGHTS

log = logging.getLogger("closedloop.serve")

REGISTRY = Path("models/registry.yaml")
PRODUCTION_DIR = Path("models/production")  # where the registry's production model is resolved
MAX_ID = 64  # longest request_id or source accepted (the store's column width)


# ------------------------------------------------------------------------- the model
@dataclass
class ServedModel:
    model: torch.nn.Module
    features: list[str]
    classes: list[str]
    version: str
    source: str  # "registry" or "candidate"
    path: Path


def load_served_model(
    model_dir: Path | None = None,
    registry_path: Path = REGISTRY,
    candidate_dir: Path = CANDIDATE_DIR,
    dest: Path = PRODUCTION_DIR,
    *,
    allowed: Sequence[str],
) -> ServedModel:
    """The production model models/registry.yaml names; else the local candidate, said aloud.

    ``model_dir`` pins a directory (tests, local trials); it is served as a candidate.
    ``allowed`` is params ``allowed_targets``: the only networks a model may build.
    """
    if model_dir is None and registry_path.exists():
        from closedloop.registry import registry

        entry = registry.production_entry(registry.load_registry(registry_path))
        if entry is not None:
            path = Path(registry.resolve_model(entry, dest))
            served = _load(path, str(entry["version"]), "registry", allowed)
            log.info("serve: production model %s from %s", served.version, registry_path)
            return served
        why = f"{registry_path} names no production model"
    elif model_dir is not None:
        why, candidate_dir = f"--model-dir {model_dir}", Path(model_dir)
    else:
        why = f"no production model ({registry_path} missing)"
    if not (Path(candidate_dir) / WEIGHTS).exists():
        raise ConfigError(f"{candidate_dir}: no model to serve ({why}); run `dvc repro` first")
    digest = sha256_file(Path(candidate_dir) / WEIGHTS)
    served = _load(Path(candidate_dir), f"candidate-{digest[:12]}", "candidate", allowed)
    log.warning(
        "serve: %s; serving the local candidate %s as %s, not a reviewed production model",
        why,
        candidate_dir,
        served.version,
    )
    return served


def _load(path: Path, version: str, source: str, allowed: Sequence[str]) -> ServedModel:
    model, config = load_model(path, allowed)
    return ServedModel(
        model, list(config["features"]), list(config["classes"]), version, source, path
    )


# ------------------------------------------------------------------------- the store
def open_store(params: dict, url: str | None = None) -> FeedbackStore:
    """The feedback store serve.* describes; refuses to start if a hash key is needed and absent."""
    serve = params["serve"]
    personal = params["dataset"]["personal"]
    key_env = serve["privacy"]["key_env"]
    key = os.environ.get(key_env)
    hashed = sorted(k for k, v in personal.items() if v == "hash")
    if hashed and not key:
        raise ConfigError(
            f"dataset.personal marks {hashed} for hashing but ${key_env} is not set "
            f"(set it to a secret, e.g. `export {key_env}=$(openssl rand -hex 32)`)"
        )
    url = url or serve["store_url"]
    try:
        return FeedbackStore(
            url,
            batch_size=serve["batch_size"],
            flush_interval_ms=serve["flush_interval_ms"],
            personal=personal,
            hash_key=key.encode() if key else None,
        )
    except (StoreError, SQLAlchemyError, OSError) as e:
        raise ConfigError(f"serve.store_url {url}: {str(e).strip().splitlines()[0]}") from None


# --------------------------------------------------------------------- validation
def _bad(message: str, status: int = 422) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, refusing bodies over ``limit`` bytes before and while reading."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _bad(f"body: {declared} bytes is over the limit of {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _bad(f"body: over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    try:
        payload = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:
        raise _bad(f"body: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict):
        raise _bad(f"body: expected a JSON object, got {type(payload).__name__}")
    return payload


def _only(payload: dict, allowed: tuple[str, ...]) -> None:
    for key in payload:
        if key not in allowed:
            raise _bad(f"{key}: unknown field (expected: {', '.join(allowed)})")


def parse_features(raw: Any, features: list[str]) -> list[float]:
    """Feature values in the model's order; every one present, numeric and finite, no extras."""
    if not isinstance(raw, dict):
        raise _bad("features: expected an object mapping feature name to number")
    for name in raw:
        if name not in features:
            raise _bad(f"features.{name}: unknown feature (expected: {', '.join(features)})")
    values = []
    for name in features:
        if name not in raw:
            raise _bad(f"features.{name}: missing")
        v = raw[name]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _bad(f"features.{name}: expected a number, got {type(v).__name__} {v!r:.40}")
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):  # JSON NaN/Infinity literals and overflowing numbers
            raise _bad(f"features.{name}: expected a finite number, got {v!r:.40}")
        values.append(x)
    return values


def parse_event_time(raw: Any) -> str | None:
    """An ISO date or datetime, normalised; None when absent."""
    if raw is None:
        return None
    if isinstance(raw, str) and len(raw) <= 40:
        for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
            try:
                return parse(raw).isoformat()
            except ValueError:
                pass
    raise _bad(f"event_time: expected an ISO date like 2014-03-01, got {raw!r:.40}")


def _text(payload: dict, key: str, default: str | None = None) -> str | None:
    v = payload.get(key, default)
    if v is not None and (not isinstance(v, str) or not v or len(v) > MAX_ID):
        raise _bad(f"{key}: expected a non-empty string of at most {MAX_ID} characters")
    return v


def parse_feedback(payload: dict, classes: list[str]) -> tuple[str, str | None, str | None, str]:
    """request_id, label, action and source of a feedback body."""
    _only(payload, ("request_id", "label", "action", "source"))
    request_id = _text(payload, "request_id")
    if request_id is None:
        raise _bad("request_id: missing")
    label = payload.get("label")
    if label is not None and (not isinstance(label, str) or label not in classes):
        raise _bad(f"label: unknown label {label!r:.40} (expected one of: {', '.join(classes)})")
    action = payload.get("action")
    if action is not None and action not in ACTIONS:
        raise _bad(f"action: expected one of {', '.join(ACTIONS)}, got {action!r:.40}")
    if label is None and action in (None, "correct"):
        raise _bad("label: missing (only action 'accept' or 'reject' may come without a label)")
    return request_id, label, action, _text(payload, "source", "api")


# ---------------------------------------------------------------------------- app
def create_app(
    params: dict, served: ServedModel | None = None, store: FeedbackStore | NullStore | None = None
) -> FastAPI:
    """The API around ``served`` (default: load_served_model()), logging into ``store``.

    The app owns the store: it is closed (and flushed) when the app shuts down.
    """
    served = served or load_served_model(allowed=params["allowed_targets"])
    store = store if store is not None else open_store(params)
    limit = params["serve"]["max_body_bytes"]

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        store.close()

    app = FastAPI(title="closedloop", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served, app.state.store = served, store

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        start = time.perf_counter()
        payload = await read_json(request, limit)
        _only(payload, ("features", "event_time"))
        values = parse_features(payload.get("features"), served.features)
        event_time = parse_event_time(payload.get("event_time"))
        probs = predict_proba(served.model, [values])[0].tolist()
        probabilities = dict(zip(served.classes, probs, strict=True))
        prediction = served.classes[max(range(len(probs)), key=probs.__getitem__)]
        request_id = uuid.uuid4().hex
        record = PredictionRecord(
            request_id=request_id,
            ts=dt.datetime.now(dt.timezone.utc),
            model_version=served.version,
            features=dict(zip(served.features, values, strict=True)),
            prediction=prediction,
            probabilities=probabilities,
            latency_ms=(time.perf_counter() - start) * 1000,
            event_time=event_time,
        )
        await _persist(store.persist_prediction, record)
        return JSONResponse(
            {
                "request_id": request_id,
                "prediction": prediction,
                "probabilities": probabilities,
                "model_version": served.version,
            }
        )

    @app.post("/feedback")
    async def feedback(request: Request) -> JSONResponse:
        payload = await read_json(request, limit)
        request_id, label, action, source = parse_feedback(payload, served.classes)
        if not await run_in_threadpool(store.has_prediction, request_id):
            raise _bad(f"request_id: no prediction {request_id!r:.80} in the store", 404)
        record = FeedbackRecord(request_id, dt.datetime.now(dt.timezone.utc), label, action, source)
        await _persist(store.persist_feedback, record)
        return JSONResponse({"request_id": request_id, "label": label, "action": action})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = store.healthy()
        body = {
            "status": "ok" if ok else "degraded",
            "model_version": served.version,
            "source": served.source,
            "store": {"ok": ok, "pending": store.pending, "error": store.error},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    return app


async def _persist(persist, record) -> None:
    """Wait until the record is committed; a store that cannot commit is a 503, never a 2xx."""
    try:
        await persist(record)
    except StoreError as e:
        raise _bad(str(e), 503) from None


# ---------------------------------------------------------------------------- main
def spawn(
    args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120.0
) -> tuple[subprocess.Popen, str]:
    """Start `closedloop serve ARGS` on a free 127.0.0.1 port; return it and its URL
    once /healthz answers. The demo, the load test and the serving benchmark start it so."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "closedloop", "serve", "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    # Its output goes to a file, not a pipe: nobody reads a pipe, and a full one would stall
    # the server. The server keeps the file open after we close ours.
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                time.sleep(0.2)
        proc.kill()
        proc.wait()
        log_file.seek(0)
        tail = log_file.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"the server did not become healthy in {timeout:.0f}s: {tail[0]}")


def run_server(
    host: str | None = None,
    port: int | None = None,
    store_url: str | None = None,
    model_dir: Path | None = None,
    no_logging: bool = False,
) -> None:
    """Serve until stopped: `closedloop serve` (make serve). Defaults come from conf/serve/."""
    import uvicorn

    params = load_params()
    serve = params["serve"]
    host = host or serve["host"]
    port = port or serve["port"]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # batch-of-one inference: extra threads only add contention
    served = load_served_model(model_dir, allowed=params["allowed_targets"])
    if no_logging:
        store: FeedbackStore | NullStore = NullStore()
        log.warning("serve: --no-logging: predictions and feedback are NOT stored")
    else:
        store = open_store(params, store_url)
    log.info(
        "serve: model %s (%s) on http://%s:%d, store %s",
        served.version,
        served.source,
        host,
        port,
        store.url,
    )
    app = create_app(params, served, store)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
