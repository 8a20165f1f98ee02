"""The online side's config: conf/rollout/ (staged rollouts) and conf/monitor/ (the page, alerts).

Self-contained pydantic models, called from one place (``core.validate`` through
``validate_online``), so the two groups validate the same way whatever the rest of the config
module becomes. Both groups are optional: a config without them gets ``rollout: off`` and the
default monitor, so older params.yaml files still load.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from closedloop.errors import ConfigError

ONLINE_GROUPS = ("rollout", "monitor")

# Which side of each guardrail metric is harm. Declared in the YAML so it reads plainly; a
# direction that contradicts the metric is refused rather than silently reinterpreted.
GUARDRAIL_DIRECTIONS = {
    "error_rate": "lower_is_better",
    "latency_p99": "lower_is_better",
    "disagreement": "lower_is_better",
    "accuracy": "higher_is_better",
}
RULE_METRICS = (
    "estimated_accuracy",
    "realised_accuracy",
    "drift_share",
    "error_rate",
    "latency_p99_ms",
    "feedback_rate",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Assignment(_Strict):
    key: str = Field("request_id", min_length=1)
    salt: str = Field("closedloop", min_length=1)


class Guardrail(_Strict):
    metric: Literal["error_rate", "latency_p99", "disagreement", "accuracy"]
    direction: Literal["lower_is_better", "higher_is_better"]
    margin: float = Field(ge=0)
    min_samples: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _direction_matches(self) -> Guardrail:
        wanted = GUARDRAIL_DIRECTIONS[self.metric]
        if self.direction != wanted:
            raise ValueError(f"direction: {self.metric} is {wanted}, got {self.direction!r}")
        return self


class RolloutConfig(_Strict):
    name: str
    mode: Literal["off", "shadow", "canary"] = "off"
    share: float = Field(0.0, ge=0, le=1)
    shares: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.05, 0.25, 0.5, 1.0]
    )
    assignment: Assignment = Field(default_factory=Assignment)
    guardrails: list[Guardrail] = Field(default_factory=list)
    min_requests: int = Field(1000, ge=1)
    min_hours: float = Field(24.0, ge=0)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    srm_alpha: float = Field(0.001, gt=0, lt=0.5)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _consistent(self) -> RolloutConfig:
        if list(self.shares) != sorted(set(self.shares)):
            raise ValueError(f"shares: must increase strictly, got {list(self.shares)}")
        if self.shares and self.shares[-1] != 1.0:
            raise ValueError(f"shares: the ramp must end at 1.0, got {list(self.shares)}")
        if self.mode == "canary" and self.share not in self.shares:
            raise ValueError(f"share: {self.share} is not a step of shares {list(self.shares)}")
        if self.mode != "off" and not self.guardrails:
            raise ValueError("guardrails: a rollout needs at least one guardrail")
        metrics = [g.metric for g in self.guardrails]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"guardrails: each metric at most once, got {metrics}")
        return self


class EstimateConfig(_Strict):
    calibration: Literal["isotonic", "none"] = "isotonic"
    max_ece: float = Field(0.1, gt=0, le=1)


class MonitorDrift(_Strict):
    enabled: bool = True
    min_rows: int = Field(30, ge=5)


class Rule(_Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    metric: Literal[
        "estimated_accuracy",
        "realised_accuracy",
        "drift_share",
        "error_rate",
        "latency_p99_ms",
        "feedback_rate",
    ]
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> Rule:
        if (self.below is None) == (self.above is None):
            raise ValueError(f"below: give exactly one of below or above (rule {self.name!r})")
        return self


class MonitorConfig(_Strict):
    name: str
    window: Literal["day", "week", "month"] = "week"
    min_requests: int = Field(30, ge=1)
    min_labels: int = Field(30, ge=1)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    drift: MonitorDrift = Field(default_factory=MonitorDrift)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_rules(self) -> MonitorConfig:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rules: duplicate rule names in {names}")
        return self


SCHEMAS: dict[str, type[_Strict]] = {"rollout": RolloutConfig, "monitor": MonitorConfig}
DEFAULTS = {"rollout": {"name": "off", "mode": "off"}, "monitor": {"name": "default"}}


def validate_online(raw: dict, conf_dir: str) -> dict[str, dict]:
    """Validate the rollout and monitor groups of a composed config; plain dicts with defaults.

    ``conf_dir`` names the config directory in messages: ``conf/rollout/canary.yaml:
    rollout.share: ...``. A missing group gets its default (rollout off).
    """
    out = {}
    for group, schema in SCHEMAS.items():
        node = raw.get(group)
        node = DEFAULTS[group] if node is None else node
        if not isinstance(node, dict):
            raise ConfigError(f"{conf_dir}/config.yaml: '{group}' must be a mapping, got {node!r}")
        where = f"{conf_dir}/{group}/{node.get('name', '?')}.yaml"
        try:
            out[group] = schema.model_validate(node).model_dump(mode="json")
        except ValidationError as e:
            raise ConfigError(f"{where}: {_first_error(e, group, schema)}") from None
    return out


def _first_error(e: ValidationError, group: str, schema: type[BaseModel]) -> str:
    """pydantic's first error as ``group.key: message``, with a suggestion for a typo."""
    err = e.errors(include_url=False)[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    key = f"{group}{path}"
    if err["type"] == "extra_forbidden":
        known = _field_names(schema, [p for p in err["loc"][:-1] if not isinstance(p, int)])
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and (m := re.match(r"([a-z_]+): ", msg)):
        return f"{key}.{m.group(1)}: {msg[m.end() :]}"  # a model check naming its field
    if err["type"] != "value_error":
        msg = f"{msg[0].lower()}{msg[1:]}, got {err.get('input')!r}"
    return f"{key}: {msg}"


def _field_names(schema: type[BaseModel], path: list) -> list[str]:
    model: Any = schema
    for part in path:
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type)), None)
        if model is None or not issubclass(model, BaseModel):
            return []
    return list(model.model_fields)
