"""The reference prediction server (`make serve`): the production model behind a small HTTP API.

    POST /predict   {"features": {...}, "event_time": "2014-03-01"?}
                    -> {"request_id", "prediction", "probabilities", "model_version"}
                       (and "arm", champion|candidate, while a rollout is on)
    POST /feedback  {"request_id", "label"?, "action"?: accept|correct|reject, "source"?}
    GET  /healthz   -> model version, where it came from, whether the store answers, and
                       the rollout: {mode, share, champion, candidate, breaker, reason}

With ``rollout.mode`` shadow or canary the champion and the candidate are served together
(closedloop.serving.rollout: who answers, what is logged, the circuit breaker).
    GET  /openapi.json   every body and every error response, built from the dataset's schema

A 2xx means the record is committed to the feedback store (group commit, see
closedloop.capture.store), so a crash never loses an acknowledged prediction or feedback.
Anything refused is not stored, and every refusal is one line that names the field:

    401  no valid bearer token, once tokens are configured (serve.auth.tokens_env)
    413  a body over serve.max_body_bytes           415  a body that is not application/json
    422  a bad field: a feature missing, unknown, not a number, not finite or beyond float32;
         an event_time outside [now - max_age_days, now + clock_skew_seconds]; feedback that
         breaks the feedback rule (closedloop.capture.rules, the one collect applies too)
    404  feedback for a request id the store does not hold
    503  the store cannot commit or answer; the body says so and nothing more

Requests and responses are pydantic models made from the model's features and classes and
the dataset's personal fields: a personal field (``dataset.personal``) is sent beside the
features, hashed or dropped before the store, and never a model feature. Without tokens the
server listens only on a loopback address; with them, they are compared in constant time.

    closedloop serve [--host H] [--port P] [--store-url URL] [--model-dir DIR] [--no-logging]
                     [--candidate-dir DIR]
"""

from __future__ import annotations

import datetime as dt
import gc
import hmac
import ipaddress
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
from typing import Annotated, Any, Literal

import pandas as pd
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from closedloop.capture.rules import ACTIONS, rule_for
from closedloop.capture.store import (
    FeedbackRecord,
    FeedbackStore,
    NullStore,
    PredictionRecord,
    redact,
)
from closedloop.config import load_params
from closedloop.errors import ConfigError, StoreError
from closedloop.io import sha256_file
from closedloop.models.encoding import Encoding, category_text, oov_counts
from closedloop.models.persist import load_model, predict_proba, predict_values
from closedloop.paths import CANDIDATE_DIR, WEIGHTS
from closedloop.serving.rollout import Rollout, candidate_version

log = logging.getLogger("closedloop.serve")

REGISTRY = Path("models/registry.yaml")
PRODUCTION_DIR = Path("models/production")  # where the registry's production model is resolved
MAX_ID = 64  # longest request_id or source accepted (the store's column width)
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # the model computes in float32
UNAVAILABLE = "feedback store unavailable: nothing was stored; try again later"


# ------------------------------------------------------------------------- the model
@dataclass
class ServedModel:
    model: torch.nn.Module
    features: list[str]
    classes: list[str]
    version: str
    source: str  # "registry" or "candidate"
    path: Path
    encoding: Encoding  # how the features become the model's input (config.json's "encoding")
    task: str = "multiclass"  # regression: a number, no probabilities


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


def load_rollout_candidate(candidate_dir: Path, allowed: Sequence[str]) -> ServedModel:
    """The candidate a rollout tries beside the champion: models/candidate, hash-checked."""
    served = _load(
        Path(candidate_dir), candidate_version(Path(candidate_dir)), "candidate", allowed
    )
    log.info("serve: rollout candidate %s from %s", served.version, candidate_dir)
    return served


def _load(path: Path, version: str, source: str, allowed: Sequence[str]) -> ServedModel:
    model, config = load_model(path, allowed)
    return ServedModel(
        model,
        list(config["features"]),
        list(config["classes"]),
        version,
        source,
        path,
        Encoding.from_config(config),
        config["task"],
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
    except StoreError as e:  # it names the store, password hidden
        raise ConfigError(f"serve.store_url: {e}") from None
    except OSError as e:
        raise ConfigError(f"serve.store_url {redact(url)}: {e.strerror or e}") from None


# ---------------------------------------------------------------------- access
def api_tokens(params: dict) -> list[bytes]:
    """The bearer tokens the API accepts: $<serve.auth.tokens_env>, comma-separated."""
    raw = os.environ.get(params["serve"]["auth"]["tokens_env"], "")
    return [t.strip().encode() for t in raw.split(",") if t.strip()]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(params: dict, host: str) -> None:
    """Refuse to listen beyond loopback when anyone could then call the API unauthenticated."""
    env = params["serve"]["auth"]["tokens_env"]
    if not is_loopback(host) and not api_tokens(params):
        raise ConfigError(
            f"serve.host {host}: not a loopback address, and ${env} holds no API tokens: set it "
            "(comma-separated bearer tokens, serve.auth.tokens_env) or listen on 127.0.0.1"
        )


def _authorize(request: Request, tokens: list[bytes]) -> None:
    """401 unless the request carries one of the tokens; every token is compared in full."""
    if not tokens:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    presented = given.strip().encode()
    matched = False
    for token in tokens:  # no early exit: the time taken says nothing about which matched
        matched |= hmac.compare_digest(presented, token)
    if scheme.lower() != "bearer" or not presented or not matched:
        raise HTTPException(
            401,
            "authorization: a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


# ------------------------------------------------------------------ the API's models
class ErrorBody(BaseModel):
    detail: str = Field(description="one line naming the field or the reason")


class StoreHealth(BaseModel):
    ok: bool
    pending: int = Field(description="records handed to the writer and not yet committed")


class RolloutHealth(BaseModel):
    mode: Literal["off", "shadow", "canary"]
    share: float = Field(description="the candidate's declared share (canary)")
    champion: str | None = Field(description="the champion's version; null without a rollout")
    candidate: str | None = Field(description="the candidate's version; null without a rollout")
    breaker: Literal["open", "closed"] = Field(
        description="open: the candidate gets no requests, the champion answers all"
    )
    reason: str | None = Field(description="why the breaker opened")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model_version: str
    source: Literal["registry", "candidate"]
    store: StoreHealth
    rollout: RolloutHealth
    oov: dict[str, int] = Field(
        description="per categorical feature: values served since start that training never held"
    )


def _event_time(text: str) -> str:
    """An ISO date or datetime, normalised (datetimes to UTC; a naive one is taken as UTC)."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PydanticCustomError("event_time", "not ISO") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat()


EventTime = Annotated[
    str,
    Field(max_length=40),
    AfterValidator(_event_time),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    ),
]
FeatureValue = Annotated[
    float,
    Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX),
]
# A categorical value: text, or a boolean or integer, which the model reads as its text
# ("True", "3"), as it read the training table. Unseen values go to the out-of-vocabulary bucket.
CategoryValue = Annotated[str, Field(max_length=256)] | StrictBool | StrictInt
PersonalValue = (
    Annotated[str, Field(max_length=256)]
    | StrictInt
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
)
Text = Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ApiModels:
    """Request and response models for one model's features and classes."""

    def __init__(
        self, served: ServedModel, personal: dict[str, str], window: dict, rollout: bool = False
    ):
        self.features = served.features
        self.personal = [name for name in personal if name not in served.features]
        self.categorical = set(served.encoding.categorical)
        strict = ConfigDict(extra="forbid")
        encoding = served.encoding
        # Numbers for numeric features, text for categorical ones; null only where the
        # feature's missing-value policy imputes it (it is still a required key).
        fields: dict[str, Any] = {}
        for i, name in enumerate(self.features):
            kind = CategoryValue if name in encoding.categorical else FeatureValue
            fields[f"f{i}"] = (
                kind | None if encoding.imputes(name) else kind,
                Field(alias=name),
            )
        fields |= {
            f"p{i}": (
                PersonalValue | None,
                Field(
                    None, alias=name, description=f"personal: {personal[name]}ed before the store"
                ),
            )
            for i, name in enumerate(self.personal)
        }
        self.Features = create_model("Features", __config__=strict, **fields)
        max_age = dt.timedelta(days=window["max_age_days"])
        skew = dt.timedelta(seconds=window["clock_skew_seconds"])

        def in_window(request):
            if request.event_time is not None:
                when = dt.datetime.fromisoformat(request.event_time)
                when = (
                    when
                    if isinstance(when, dt.datetime) and when.tzinfo
                    else when.replace(tzinfo=dt.timezone.utc)
                )
                now = dt.datetime.now(dt.timezone.utc)
                if not now - max_age <= when <= now + skew:
                    raise PydanticCustomError(
                        "event_time_window",
                        "event_time: {got} is outside [now - {days} days, now + {skew} s]",
                        {
                            "got": request.event_time,
                            "days": max_age.days,
                            "skew": int(skew.total_seconds()),
                        },
                    )
            return request

        self.Predict = create_model(
            "PredictRequest",
            __config__=strict,
            __validators__={"window": model_validator(mode="after")(in_window)},
            features=(self.Features, ...),
            event_time=(EventTime | None, None),
        )
        rule = rule_for(served.task, served.classes)
        regression = served.task == "regression"

        def follows_the_rule(request):
            problem = rule.problem(request.label, request.action)
            if problem:
                raise PydanticCustomError("feedback_rule", "{problem}", {"problem": problem})
            return request

        self.Feedback = create_model(
            "FeedbackRequest",
            __config__=strict,
            __validators__={"rule": model_validator(mode="after")(follows_the_rule)},
            request_id=(Text, ...),
            label=(
                (
                    Annotated[float, Field(strict=True, allow_inf_nan=False)]
                    if regression
                    else Literal[tuple(served.classes)]
                )
                | None,
                None,
            ),
            action=(Literal[ACTIONS] | None, None),
            source=(Text, "api"),
        )
        self.PredictResponse = create_model(
            "PredictResponse",
            request_id=(str, ...),
            prediction=(float if regression else Literal[tuple(served.classes)], ...),
            probabilities=(
                dict[str, float] | None,
                Field(description="class -> probability; null for regression"),
            ),
            model_version=(str, Field(description="the model that answered")),
            **(
                {
                    "arm": (
                        Literal["champion", "candidate"],
                        Field(description="the rollout arm whose model answered"),
                    )
                }
                if rollout
                else {}
            ),
        )
        self.FeedbackResponse = create_model(
            "FeedbackResponse",
            request_id=(str, ...),
            label=(float | str | None, ...),
            action=(str | None, ...),
        )

    def parse(self, model: type[BaseModel], body: bytes) -> BaseModel:
        """Validate a body; a refusal is one line naming the first bad field."""
        try:
            return model.model_validate_json(body)
        except ValidationError as e:
            errors = e.errors(include_url=False)
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise HTTPException(422, self._describe(model, errors[0]) + more) from None

    def _describe(self, model: type[BaseModel], err: dict) -> str:
        loc = [str(x) for x in err["loc"]]
        kind, got = err["type"], err.get("input")
        where = ".".join(loc[:2] if loc[:1] == ["features"] else loc[:1]) or "body"
        if kind == "json_invalid":
            return f"body: not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        if kind in ("event_time", "feedback_rule", "event_time_window"):
            return (
                err["msg"]
                if kind != "event_time"
                else (
                    f"event_time: expected an ISO date like 2014-03-01 or an ISO datetime, got {got!r:.40}"
                )
            )
        if where == "event_time":
            return f"event_time: expected an ISO date like 2014-03-01 or an ISO datetime, got {got!r:.40}"
        if kind == "extra_forbidden":
            known = (
                [*self.features, *self.personal]
                if where.startswith("features.")
                else list(model.model_fields)
            )
            label = "feature" if where.startswith("features.") else "field"
            return f"{where}: unknown {label} (expected: {', '.join(known)})"
        if kind == "missing":
            return f"{where}: missing"
        if where.startswith("features.") and where[len("features.") :] in self.personal:
            return f"{where}: expected a string of at most 256 characters or a finite number, got {got!r:.40}"
        if where.startswith("features.") and where[len("features.") :] in self.categorical:
            return f"{where}: expected a string (a category) of at most 256 characters, got {got!r:.40}"
        if kind == "none_forbidden" or (got is None and where.startswith("features.")):
            return f"{where}: missing value not allowed (its missing-value policy is reject)"
        if kind in ("less_than_equal", "greater_than_equal"):
            return f"{where}: outside float32's range (±{FLOAT32_MAX:.4g}), got {got!r:.40}"
        if kind == "finite_number":
            return f"{where}: expected a finite number, got {got!r:.40}"
        if kind in ("float_type", "float_parsing"):
            return f"{where}: expected a number, got {type(got).__name__} {got!r:.40}"
        return f"{where}: {err['msg']} (got {got!r:.40})"


# --------------------------------------------------------------------- validation
def _bad(message: str, status: int = 422) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw JSON body, refusing other content types and bodies over ``limit`` bytes."""
    kind = request.headers.get("content-type", "")
    if kind.split(";", 1)[0].strip().lower() != "application/json":
        raise _bad(f"content-type: expected application/json, got {kind or 'none'!r:.60}", 415)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _bad(f"body: {declared} bytes is over the limit of {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _bad(f"body: over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _responses(ok: type[BaseModel], *errors: int) -> dict:
    said = {
        401: "no valid bearer token (tokens are configured)",
        404: "no prediction with this request id",
        413: "body over serve.max_body_bytes",
        415: "body is not application/json",
        422: "a bad field, named in the detail",
        503: "the feedback store cannot commit or answer; nothing was stored",
    }
    out: dict[int, dict] = {200: {"model": ok, "description": "committed to the feedback store"}}
    for code in errors:
        out[code] = {"model": ErrorBody, "description": said[code]}
    return out


def _body_doc(name: str, secured: bool) -> dict:
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }
    if secured:
        extra["security"] = [{"bearer": []}]
    return extra


# ---------------------------------------------------------------------------- app
def create_app(
    params: dict,
    served: ServedModel | None = None,
    store: FeedbackStore | NullStore | None = None,
    candidate: ServedModel | None = None,
    clock=time.perf_counter,
) -> FastAPI:
    """The API around ``served`` (default: load_served_model()), logging into ``store``.

    With ``rollout.mode`` shadow or canary, ``candidate`` (default: models/candidate) runs
    beside it as closedloop.serving.rollout says. ``clock`` times the models (a test seam).
    The app owns the store: it is closed (and flushed) when the app shuts down.
    """
    served = served or load_served_model(allowed=params["allowed_targets"])
    cfg = params["rollout"]
    personal = params["dataset"]["personal"]
    shared = sorted(set(personal) & set(served.features))
    if shared:
        raise ConfigError(
            f"dataset.personal.{shared[0]}: is a model feature; hashing or dropping it would "
            "leave the model without it (list only fields sent beside the features)"
        )
    tokens = api_tokens(params)
    rollout = None
    if cfg["mode"] != "off":
        if served.task == "regression":
            raise ConfigError(
                f"rollout.mode {cfg['mode']}: the server's rollouts compare classifiers; a "
                "regression model is served without one (set rollout to off)"
            )
        candidate = candidate or load_rollout_candidate(CANDIDATE_DIR, params["allowed_targets"])
        rollout = Rollout(cfg, served, candidate, [*served.features, *personal], clock)
        log.info(
            "serve: rollout %s: champion %s, candidate %s%s",
            cfg["mode"],
            served.version,
            candidate.version,
            f" at share {rollout.share:g} by {rollout.key}" if cfg["mode"] == "canary" else "",
        )
    api = ApiModels(served, personal, params["serve"]["event_time"], rollout is not None)
    store = store if store is not None else open_store(params)
    limit = params["serve"]["max_body_bytes"]
    errors = (401,) if tokens else ()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        store.close()

    app = FastAPI(title="closedloop", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served, app.state.store, app.state.rollout = served, store, rollout
    oov: dict[str, int] = dict.fromkeys(served.encoding.categorical, 0)  # unseen values served
    app.state.oov = oov

    @app.post(
        "/predict",
        responses=_responses(api.PredictResponse, *errors, 413, 415, 422, 503),
        openapi_extra=_body_doc("PredictRequest", bool(tokens)),
    )
    async def predict(request: Request) -> JSONResponse:
        """Predict, and commit the prediction to the feedback store before answering."""
        start, start_clock = time.perf_counter(), clock()
        _authorize(request, tokens)
        body = api.parse(api.Predict, await read_body(request, limit))
        given = body.features.model_dump(by_alias=True, exclude_none=True)
        row = pd.DataFrame([{name: given.get(name) for name in served.features}])
        for name in served.encoding.categorical:  # stored as the text the model read
            row[name] = category_text(row[name])
            if row.at[0, name] is not None:
                given[name] = row.at[0, name]
        for name in served.features:  # a missing value is stored as null, then imputed
            given.setdefault(name, None)
        x, counts = served.encoding.transform(row)
        for name, n in oov_counts(counts).items():
            oov[name] = oov.get(name, 0) + n
        request_id = uuid.uuid4().hex
        columns: dict = {}
        version, arm = served.version, None
        if served.task == "regression":
            value = float(predict_values(served.model, x)[0])
            if not math.isfinite(value):
                raise _bad("features: the model gives no finite prediction for these values")
            prediction, probabilities, stored = value, None, repr(value)
        else:
            if rollout is None:
                probs = predict_proba(served.model, x)[0].tolist()
            else:
                parsed = clock()
                routed = rollout.route(request_id, given, row, (parsed - start_clock) * 1000)
                # None: the champion failed too, refused below as it would be without a rollout
                probs = routed.answer.probabilities or [math.nan]
                version, arm, columns = routed.version, routed.arm, routed.columns
            if not all(map(math.isfinite, probs)):
                raise _bad("features: the model gives no finite probabilities for these values")
            probabilities = dict(zip(served.classes, probs, strict=True))
            prediction = served.classes[max(range(len(probs)), key=probs.__getitem__)]
            stored = prediction
        latency_ms = (
            (time.perf_counter() - start) * 1000
            if rollout is None
            else (parsed - start_clock) * 1000 + routed.answer.ms
        )
        record = PredictionRecord(
            request_id=request_id,
            ts=dt.datetime.now(dt.timezone.utc),
            model_version=version,
            features=given,  # personal fields included: the store hashes or drops them
            prediction=stored,  # a regressor's value as its shortest text
            probabilities=probabilities or {},
            latency_ms=latency_ms,
            event_time=body.event_time,
            **columns,
        )
        await _persist(store.persist_prediction, record)
        answer = {
            "request_id": request_id,
            "prediction": prediction,
            "probabilities": probabilities,
            "model_version": version,
        }
        if rollout is not None:
            answer["arm"] = arm or "champion"
        return JSONResponse(answer)

    @app.post(
        "/feedback",
        responses=_responses(api.FeedbackResponse, *errors, 404, 413, 415, 422, 503),
        openapi_extra=_body_doc("FeedbackRequest", bool(tokens)),
    )
    async def feedback(request: Request) -> JSONResponse:
        """Record a label or an accept/correct/reject for an earlier prediction."""
        _authorize(request, tokens)
        body = api.parse(api.Feedback, await read_body(request, limit))
        try:
            known = await run_in_threadpool(store.has_prediction, body.request_id)
        except StoreError as e:
            log.error("serve: %s", e)
            raise _bad(UNAVAILABLE, 503) from None
        if not known:
            raise _bad(f"request_id: no prediction {body.request_id!r:.80} in the store", 404)
        now = dt.datetime.now(dt.timezone.utc)
        # A regressor's label is stored as its shortest text, as its prediction is.
        label = repr(float(body.label)) if isinstance(body.label, float) else body.label
        record = FeedbackRecord(body.request_id, now, label, body.action, body.source)
        await _persist(store.persist_feedback, record)
        return JSONResponse(
            {"request_id": body.request_id, "label": body.label, "action": body.action}
        )

    @app.get("/healthz", responses={200: {"model": Health}, 503: {"model": Health}})
    async def healthz() -> JSONResponse:
        """Whether the model is loaded and the store commits and answers (no internals)."""
        ok = store.healthy() and await run_in_threadpool(store.ping)
        body = {
            "status": "ok" if ok else "degraded",
            "model_version": served.version,
            "source": served.source,
            "store": {"ok": ok, "pending": store.pending},
            "rollout": rollout.health()
            if rollout is not None
            else {
                "mode": "off",
                "share": 0.0,
                "champion": None,
                "candidate": None,
                "breaker": "closed",
                "reason": None,
            },
            "oov": dict(oov),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    def openapi() -> dict:
        """FastAPI's document plus the request bodies the handlers validate themselves."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (api.Predict, api.Feedback):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            if tokens:
                doc["components"]["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
    return app


async def _persist(persist, record) -> None:
    """Wait until the record is committed; a store that cannot commit is a 503, never a 2xx."""
    try:
        await persist(record)
    except StoreError as e:
        log.error("serve: %s", e)
        raise _bad(UNAVAILABLE, 503) from None


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
    candidate_dir: Path | None = None,
) -> None:
    """Serve until stopped: `closedloop serve` (make serve). Defaults come from conf/serve/."""
    import uvicorn

    params = load_params()
    serve = params["serve"]
    host = host or serve["host"]
    port = port or serve["port"]
    check_bind(params, host)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # batch-of-one inference: extra threads only add contention
    served = load_served_model(model_dir, allowed=params["allowed_targets"])
    candidate = None
    if params["rollout"]["mode"] != "off":
        if served.source != "registry" and model_dir is None:
            raise ConfigError(
                f"rollout.mode is {params['rollout']['mode']}: a rollout tries the candidate "
                f"beside the production model, but {REGISTRY} names none (promote one first, "
                "or pin the champion with --model-dir)"
            )
        candidate = load_rollout_candidate(
            candidate_dir or CANDIDATE_DIR, params["allowed_targets"]
        )
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
    try:
        app = create_app(params, served, store, candidate)
    except ConfigError:
        store.close()
        raise
    if api_tokens(params):
        log.info("serve: bearer tokens required ($%s)", serve["auth"]["tokens_env"])
    tune_collector()
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


YOUNG_COLLECTION_THRESHOLD = 20_000  # Python's default is 700


def tune_collector() -> None:
    """Keep the garbage collector off the request path.

    Startup builds about a million objects that live as long as the server (torch, pandas,
    the model, the app): they are frozen out of every collection. And with logging on, 16
    requests that wait for their commit hold their objects for a while, so Python's default
    700 net allocations set off a young collection every ~9 requests, each walking what those
    requests hold (150 us). A higher threshold leaves them to reference counting, which frees
    almost everything; only reference cycles wait longer, a few MB at most. Measured in make
    bench (serving): server CPU per request with logging 908 us before either, 768 us frozen,
    632 us with both (643 us without logging).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
