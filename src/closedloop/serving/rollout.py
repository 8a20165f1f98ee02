"""The server's half of a rollout: the champion and the candidate side by side.

``rollout.mode`` (conf/rollout/) decides who answers:

- **shadow**: the champion answers every request; the candidate runs on the same input and
  only its prediction, latency and error are logged (``shadow_*``). A candidate that raises
  never fails the request.
- **canary**: ``assign(key, share, salt)`` sends a share of requests to the candidate, which
  answers them (the response's ``model_version`` and ``arm`` say so); the champion also runs
  on those in shadow, for the disagreement guardrail. A candidate that fails on a request
  leaves it to the champion, and the record keeps the assigned arm with ``error`` saying why,
  so the sample ratio stays true and the error-rate guardrail sees the failure.

A local **circuit breaker** watches the candidate's last ``breaker.window`` requests. When
more than ``max_error_rate`` of them failed, or more than ``max_slow_rate`` took longer than
``latency_budget_ms``, it opens: the candidate gets no more requests, the champion answers
everything, one line goes to the log and ``/healthz`` says so. It stays open until the server
restarts: a hard limit is for a person to look at, and the records it leaves (``error`` or
``shadow_error``: "circuit breaker open") make `closedloop rollout decide` roll back.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from closedloop.artefacts.card import ModelCard
from closedloop.errors import ConfigError
from closedloop.io import sha256_file
from closedloop.models.persist import predict_proba
from closedloop.paths import CARD_JSON, WEIGHTS
from closedloop.rollout.assign import assign

log = logging.getLogger("closedloop.serve")

BREAKER_OPEN = "circuit breaker open"
MAX_ERROR = 200  # characters of an exception kept in a record


@dataclass
class Answer:
    """One model's answer to one request: probabilities, or why there are none."""

    probabilities: list[float] | None
    error: str | None
    ms: float  # how long the model took, answer or failure

    def prediction(self, classes: list[str]) -> str | None:
        if self.probabilities is None:
            return None
        p = self.probabilities
        return classes[max(range(len(p)), key=p.__getitem__)]


def forward(served, row, clock: Callable[[], float]) -> Answer:
    """Run a served model on one request (a one-row frame of raw features, encoded with that
    model's own encoding); any exception or non-finite output is an error, not a raise."""
    start = clock()
    try:
        x, _ = served.encoding.transform(row)
        probs = predict_proba(served.model, x)[0].tolist()
    except Exception as e:  # a candidate must never fail the request
        text = f"{type(e).__name__}: {e}".splitlines()[0][:MAX_ERROR]
        return Answer(None, text, (clock() - start) * 1000)
    ms = (clock() - start) * 1000
    if not all(map(math.isfinite, probs)):
        return Answer(None, "no finite probabilities", ms)
    return Answer(probs, None, ms)


class Breaker:
    """Opens once the candidate's recent requests break a hard limit; stays open."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.recent: collections.deque = collections.deque(maxlen=cfg["window"])
        self.reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def record(self, failed: bool, latency_ms: float) -> None:
        """Count one candidate request; open the breaker if the window breaks a limit."""
        if self.is_open:
            return
        cfg = self.cfg
        self.recent.append((failed, latency_ms > cfg["latency_budget_ms"]))
        n = len(self.recent)
        if n < cfg["min_requests"]:
            return
        errors = sum(f for f, _ in self.recent)
        slow = sum(s for _, s in self.recent)
        if errors / n > cfg["max_error_rate"]:
            self.reason = (
                f"{errors} of the candidate's last {n} requests failed "
                f"(limit {cfg['max_error_rate']:.0%})"
            )
        elif slow / n > cfg["max_slow_rate"]:
            self.reason = (
                f"{slow} of the candidate's last {n} requests took over "
                f"{cfg['latency_budget_ms']:g} ms (limit {cfg['max_slow_rate']:.0%})"
            )


@dataclass
class Routed:
    """What the server answers and what it logs for one request under a rollout."""

    answer: Answer  # the answering model's
    version: str  # the answering model's version
    arm: str | None  # the arm whose model answered (the response's ``arm``)
    columns: dict = field(default_factory=dict)  # the record's rollout columns


class Rollout:
    """The champion and the candidate, and who answers each request (params ``rollout``)."""

    def __init__(
        self,
        cfg: dict,
        champion,
        candidate,
        key_fields: Sequence[str],
        clock: Callable[[], float] = time.perf_counter,
    ):
        if cfg["mode"] not in ("shadow", "canary"):
            raise ValueError(f"rollout mode {cfg['mode']!r} needs no candidate")
        key = cfg["assignment"]["key"]
        if key != "request_id" and key not in key_fields:
            raise ConfigError(
                f"rollout.assignment.key: {key!r} is neither request_id nor a field a request "
                f"sends (features or dataset.personal: {', '.join(key_fields)})"
            )
        if list(candidate.classes) != list(champion.classes):
            raise ConfigError(
                f"rollout: the candidate's classes {candidate.classes} are not the champion's "
                f"{champion.classes}; the two cannot be compared"
            )
        if list(candidate.features) != list(champion.features):
            raise ConfigError(
                f"rollout: the candidate's features {candidate.features} are not the "
                f"champion's {champion.features}"
            )
        self.cfg, self.champion, self.candidate, self.clock = cfg, champion, candidate, clock
        self.mode, self.share, self.key = cfg["mode"], float(cfg["share"]), key
        self.breaker = Breaker(cfg["breaker"])

    def arm_for(self, request_id: str, given: dict) -> str | None:
        """The assigned arm; None when the request lacks the assignment key (not in the rollout)."""
        if self.mode == "shadow":
            return "champion"
        value = request_id if self.key == "request_id" else given.get(self.key)
        if value is None:
            return None
        return assign(str(value), self.share, self.cfg["assignment"]["salt"])

    def _candidate(self, row, parse_ms: float) -> Answer:
        """Run the candidate, and let the breaker count it (latency as the caller would see it)."""
        answer = forward(self.candidate, row, self.clock)
        was_open = self.breaker.is_open
        self.breaker.record(answer.error is not None, parse_ms + answer.ms)
        if self.breaker.is_open and not was_open:
            log.error(
                "rollout: circuit breaker open: %s; the candidate %s gets no more requests, "
                "the champion %s answers every request until the server restarts",
                self.breaker.reason,
                self.candidate.version,
                self.champion.version,
            )
        return answer

    def route(self, request_id: str, given: dict, row, parse_ms: float) -> Routed:
        """Answer one request as the rollout says, with the columns its record carries."""
        arm = self.arm_for(request_id, given)
        classes = self.champion.classes
        if arm is None:
            return Routed(forward(self.champion, row, self.clock), self.champion.version, None)
        share = 0.0 if self.mode == "shadow" else self.share
        columns: dict = {"arm": arm, "share": share}
        if self.mode == "shadow" or arm == "champion":
            champ = forward(self.champion, row, self.clock)
            if self.mode == "shadow":
                if self.breaker.is_open:
                    columns["shadow_error"] = BREAKER_OPEN
                else:
                    cand = self._candidate(row, parse_ms)
                    columns["shadow_prediction"] = cand.prediction(classes)
                    columns["shadow_latency_ms"] = parse_ms + cand.ms
                    columns["shadow_error"] = cand.error
            return Routed(champ, self.champion.version, "champion", columns)
        # a canary request assigned to the candidate
        if self.breaker.is_open:
            columns["error"] = BREAKER_OPEN
            champ = forward(self.champion, row, self.clock)
            return Routed(champ, self.champion.version, "champion", columns)
        cand = self._candidate(row, parse_ms)
        champ = forward(self.champion, row, self.clock)
        if cand.error is not None:  # the champion answers in its place
            columns["error"] = cand.error
            champ.ms += cand.ms
            return Routed(champ, self.champion.version, "champion", columns)
        columns["shadow_prediction"] = champ.prediction(classes)
        columns["shadow_latency_ms"] = parse_ms + champ.ms if champ.error is None else None
        columns["shadow_error"] = champ.error
        return Routed(cand, self.candidate.version, "candidate", columns)

    def health(self) -> dict:
        return {
            "mode": self.mode,
            "share": self.share,
            "champion": self.champion.version,
            "candidate": self.candidate.version,
            "breaker": "open" if self.breaker.is_open else "closed",
            "reason": self.breaker.reason,
        }


def candidate_version(model_dir: Path) -> str:
    """``candidate-<sha256[:12]>`` of the weights, after checking them against the model card.

    The card (written by train, judged by the gate) records the weights' sha256: weights that
    do not match it are not the model that was judged, and are refused.
    """
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise ConfigError(
            f"{model_dir}: no candidate to roll out ({WEIGHTS} missing); run `dvc repro`"
        )
    digest = sha256_file(weights)
    card_path = Path(model_dir) / CARD_JSON
    if card_path.is_file():
        card = ModelCard.read(card_path)
        if card.weights_sha256 != digest:
            raise ConfigError(
                f"{weights}: sha256 {digest[:12]} is not the {card.weights_sha256[:12]} its "
                f"{CARD_JSON} records: not the model that was trained and judged"
            )
    else:
        raise ConfigError(
            f"{card_path}: missing; a candidate is rolled out only with its model card"
        )
    return f"candidate-{digest[:12]}"
