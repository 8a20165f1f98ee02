"""The schema of params.yaml: types and constraints only. Every default lives in conf/.

No field here has a default, so a value can only come from the YAML (or an override) and the
schema can never disagree with it. A field that may be absent in meaning is nullable and
still required (``time_column: null``). The few rules that span fields (split dates that
overlap, fractions that must sum to 1) are validators; everything else is a type.

``_target_`` nodes (dataset.source, model.net, model.module, model.optimizer, model.loss)
carry their callable's own arguments as extra keys; closedloop.config.targets checks those
against the callable's signature at compose time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from closedloop import metrics
from closedloop.config.online import MonitorConfig, RolloutConfig
from closedloop.errors import ConfigRuleError as At
from closedloop.numerics import check as check_numerics

SPLITS = ("train", "val", "production")
COMPARABLE = metrics.names(comparable=True)  # compared with the champion (closedloop.metrics)

Split = Literal["train", "val", "production"]
Comparable = Literal[COMPARABLE]  # type: ignore[valid-type]
MetricName = Literal[metrics.names()]  # type: ignore[valid-type]
PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


def _date(value: Any) -> dt.date:
    return dt.date.fromisoformat(str(value))


def _iso_date(value: Any) -> str:
    if not isinstance(value, (str, dt.date)) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
        raise ValueError(f"{value!r} is not a YYYY-MM-DD date")
    try:
        _date(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a YYYY-MM-DD date") from None
    return str(value)


def _devices(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"must be a positive integer or 'auto', got {value!r}")


def _unique(values: list | None) -> list | None:
    if values is not None and len(set(values)) != len(values):
        dupes = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"duplicate entries {dupes}")
    return values


IsoDate = Annotated[str, BeforeValidator(_iso_date)]
Devices = Annotated[Any, AfterValidator(_devices)]
UniqueNames = Annotated[list[str], AfterValidator(_unique)]


class Strict(BaseModel):
    """Unknown keys fail; nothing has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(BaseModel):
    """A callable named by ``_target_`` (instantiated with Hydra), plus its own arguments."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    target: str = Field(alias="_target_", min_length=1)


class Optimizer(Target):
    """torch.optim-style: built later with the parameters, so ``_partial_: true``."""

    partial: Literal[True] = Field(alias="_partial_")
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)


# -------------------------------------------------------------------------- dataset
class DateRange(Strict):
    start: IsoDate
    end: IsoDate

    @model_validator(mode="after")
    def _ordered(self):
        if _date(self.end) < _date(self.start):
            raise ValueError(f"ends ({self.end}) before it starts ({self.start})")
        return self


class Fractions(Strict):
    train: Fraction
    val: Fraction
    production: Fraction

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.production
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"must sum to 1, got {total:g}")
        return self


class SplitConfig(Strict):
    strategy: Literal["time", "random"]
    train: DateRange | None
    val: DateRange | None
    production: DateRange | None
    fractions: Fractions | None

    @model_validator(mode="after")
    def _complete(self):
        if self.strategy == "random":
            if self.fractions is None:
                raise At("fractions", "strategy=random needs fractions for train, val, production")
            return self
        ranges = []
        for name in SPLITS:
            r = getattr(self, name)
            if r is None:
                raise At(name, "strategy=time needs a start and end date for every split")
            ranges.append((_date(r.start), _date(r.end), name))
        for (s1, e1, n1), (s2, e2, n2) in itertools.pairwise(sorted(ranges)):
            if s2 <= e1:
                raise At(n2, f"{s2}..{e2} overlaps split.{n1} ({s1}..{e1})")
        return self


class FeedbackConfig(Strict):
    enabled: bool
    eval_days: PositiveInt
    min_rows: PositiveInt | None  # null: gates.min_samples


class DatasetConfig(Strict):
    name: str
    source: Target
    target: str
    time_column: str | None
    features: UniqueNames | None
    classes: UniqueNames | None
    split: SplitConfig
    personal: dict[str, Literal["hash", "drop"]]
    feedback: FeedbackConfig

    @model_validator(mode="after")
    def _time_column(self):
        if self.split.strategy == "time" and self.time_column is None:
            raise At("time_column", "split.strategy=time needs a time_column")
        return self


# ---------------------------------------------------------------- model and trainer
class ModelConfig(Strict):
    name: str
    net: Target
    module: Target
    optimizer: Optimizer
    loss: Target
    batch_size: PositiveInt


class TrainerConfig(Strict):
    name: str
    accelerator: str
    devices: Devices
    strategy: str
    num_nodes: PositiveInt
    precision: str
    max_epochs: PositiveInt
    deterministic: bool
    gradient_clip_val: Annotated[float, Field(gt=0)] | None
    log_every_n_steps: PositiveInt
    enable_progress_bar: bool
    num_workers: Annotated[int, Field(ge=0)]


# -------------------------------------------------------------- evaluation and gates
class MetricsConfig(Strict):
    name: str
    splits: Annotated[list[Split], Field(min_length=1)]
    ece_bins: Annotated[int, Field(ge=2)]
    calibration_bins: Annotated[int, Field(ge=2)]
    compare: list[Comparable]
    confidence_level: float = Field(gt=0.5, lt=1)
    n_resamples: Annotated[int, Field(ge=100)]
    bootstrap_seed: int


class _Slice(Strict):
    name: str


class TimeSlice(_Slice):
    by: Literal["month", "season"]


class ClassSlice(_Slice):
    by: Literal["class"]


class ColumnSlice(_Slice):
    by: Literal["column"]
    column: str


class RangeSlice(_Slice):
    by: Literal["range"]
    column: str
    bins: Annotated[list[float], Field(min_length=2)]

    @model_validator(mode="after")
    def _increasing(self):
        if sorted(self.bins) != list(self.bins):
            raise At("bins", f"must be increasing edges, got {list(self.bins)}")
        return self


SliceSpec = Annotated[TimeSlice | ClassSlice | ColumnSlice | RangeSlice, Field(discriminator="by")]


class SlicesConfig(Strict):
    name: str
    slices: list[SliceSpec]

    @model_validator(mode="after")
    def _unique_names(self):
        try:
            _unique([s.name for s in self.slices])
        except ValueError as e:
            raise At("slices", f"slice names: {e}") from None
        return self


class DriftConfig(Strict):
    name: str
    row_cap: Annotated[int, Field(ge=100)]
    seed: int
    columns: list[str] | None
    include_target: bool
    include_prediction: bool
    drift_share: float = Field(gt=0, le=1)


class ChampionCheck(Strict):
    metric: Comparable
    mode: Literal["superiority", "non_inferiority"]
    margin: float = Field(ge=0)


class SliceRegression(Strict):
    metric: Comparable
    max_drop: float = Field(ge=0)


class DriftGate(Strict):
    max_drifted_share: Annotated[float, Field(ge=0, le=1)] | None
    columns: list[str]


class GatesConfig(Strict):
    name: str
    split: Split
    min_samples: PositiveInt
    min_slice_samples: PositiveInt
    floors: dict[MetricName, float]
    vs_champion: list[ChampionCheck]
    slice_regression: SliceRegression | None
    beat_baseline: Comparable | None
    drift: DriftGate
    max_data_age_days: PositiveInt | None
    as_of: IsoDate | None
    first_model: Literal["floors_only", "fail"]


# ------------------------------------------------------------------------- serving
class PrivacyConfig(Strict):
    key_env: str


class AuthConfig(Strict):
    tokens_env: Annotated[str, Field(pattern=r"\S")]  # must name an environment variable


class EventTimeConfig(Strict):
    max_age_days: PositiveInt
    clock_skew_seconds: int = Field(ge=0)


class ServeConfig(Strict):
    name: str
    host: str
    port: int = Field(gt=0, lt=65536)
    store_url: str
    batch_size: PositiveInt
    flush_interval_ms: PositiveInt
    max_body_bytes: Annotated[int, Field(ge=256)]
    privacy: PrivacyConfig
    auth: AuthConfig
    event_time: EventTimeConfig


# ------------------------------------------------------------------------ numerics
class NumericsConfig(Strict):
    """conf/config.yaml's `numerics`: the CPU's numerical path (closedloop.numerics)."""

    mkl_cbwr: str | None
    aten_cpu_capability: str | None
    intra_op_threads: int | None

    @model_validator(mode="after")
    def _known(self) -> NumericsConfig:
        for key, msg in check_numerics(self.model_dump())[:1]:
            raise At(key, msg)
        return self


# ---------------------------------------------------------------------------- root
class Params(Strict):
    """params.yaml: conf/ composed, plus ``code`` (the user packages' hashes, from compose)."""

    seed: int
    numerics: NumericsConfig
    allowed_targets: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    dataset: DatasetConfig
    model: ModelConfig
    trainer: TrainerConfig
    metrics: MetricsConfig
    slices: SlicesConfig
    drift: DriftConfig
    gates: GatesConfig
    serve: ServeConfig
    rollout: RolloutConfig
    monitor: MonitorConfig
    code: dict[str, str]


GROUPS = (
    "dataset",
    "model",
    "trainer",
    "metrics",
    "slices",
    "drift",
    "gates",
    "serve",
    "rollout",
    "monitor",
)
