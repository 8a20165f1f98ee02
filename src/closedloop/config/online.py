"""The online side's config: conf/rollout/ (staged rollouts) and conf/monitor/ (the page, alerts).

Pydantic models, part of params.yaml's schema (closedloop.config.schema.Params).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from closedloop.errors import ConfigRuleError as At

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
    key: str = Field(min_length=1)
    salt: str = Field(min_length=1)


class Guardrail(_Strict):
    metric: Literal["error_rate", "latency_p99", "disagreement", "accuracy"]
    direction: Literal["lower_is_better", "higher_is_better"]
    margin: float = Field(ge=0)
    min_samples: int = Field(ge=1)

    @model_validator(mode="after")
    def _direction_matches(self) -> Guardrail:
        wanted = GUARDRAIL_DIRECTIONS[self.metric]
        if self.direction != wanted:
            raise At("direction", f"{self.metric} is {wanted}, got {self.direction!r}")
        return self


class RolloutConfig(_Strict):
    name: str
    mode: Literal["off", "shadow", "canary"]
    share: float = Field(ge=0, le=1)
    shares: list[Annotated[float, Field(gt=0, le=1)]]
    assignment: Assignment
    guardrails: list[Guardrail]
    min_requests: int = Field(ge=1)
    min_hours: float = Field(ge=0)
    alpha: float = Field(gt=0, lt=0.5)
    srm_alpha: float = Field(gt=0, lt=0.5)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _consistent(self) -> RolloutConfig:
        if list(self.shares) != sorted(set(self.shares)):
            raise At("shares", f"must increase strictly, got {list(self.shares)}")
        if self.shares and self.shares[-1] != 1.0:
            raise At("shares", f"the ramp must end at 1.0, got {list(self.shares)}")
        if self.mode == "canary" and self.share not in self.shares:
            raise At("share", f"{self.share} is not a step of shares {list(self.shares)}")
        if self.mode != "off" and not self.guardrails:
            raise At("guardrails", "a rollout needs at least one guardrail")
        metrics = [g.metric for g in self.guardrails]
        if len(set(metrics)) != len(metrics):
            raise At("guardrails", f"each metric at most once, got {metrics}")
        return self


class EstimateConfig(_Strict):
    calibration: Literal["isotonic", "none"]
    max_ece: float = Field(gt=0, le=1)


class MonitorDrift(_Strict):
    enabled: bool
    min_rows: int = Field(ge=5)


class _Rule(_Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    metric: Literal[
        "estimated_accuracy",
        "realised_accuracy",
        "drift_share",
        "error_rate",
        "latency_p99_ms",
        "feedback_rate",
    ]


class RuleBelow(_Rule):
    """Alert when the metric is below ``below``."""

    below: float


class RuleAbove(_Rule):
    """Alert when the metric is above ``above``."""

    above: float


def _limit(rule: Any) -> str | None:
    """Which limit a rule sets: exactly one of ``below`` and ``above``."""
    keys = {"below", "above"} & set(rule if isinstance(rule, dict) else vars(rule))
    return keys.pop() if len(keys) == 1 else None


Rule = Annotated[
    Annotated[RuleBelow, Tag("below")] | Annotated[RuleAbove, Tag("above")],
    Discriminator(
        _limit,
        custom_error_type="one_limit",
        custom_error_message="give exactly one of below or above",
    ),
]


class MonitorConfig(_Strict):
    name: str
    window: Literal["day", "week", "month"]
    min_requests: int = Field(ge=1)
    min_labels: int = Field(ge=1)
    confidence_level: float = Field(gt=0.5, lt=1)
    estimate: EstimateConfig
    drift: MonitorDrift
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_rules(self) -> MonitorConfig:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise At("rules", f"duplicate rule names in {names}")
        return self
