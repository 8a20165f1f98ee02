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
# Every task's metric names (closedloop.metrics); Params checks they are the dataset's task's.
ALL_METRICS = tuple(dict.fromkeys(m.name for ms in metrics.TASKS.values() for m in ms))
COMPARABLE = tuple(  # compared with the champion (a paired bootstrap)
    dict.fromkeys(m.name for ms in metrics.TASKS.values() for m in ms if m.comparable)
)

Split = Literal["train", "val", "production"]
Task = Literal[tuple(metrics.TASKS)]  # type: ignore[valid-type]
Comparable = Literal[COMPARABLE]  # type: ignore[valid-type]
MetricName = Literal[ALL_METRICS]  # type: ignore[valid-type]
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
    strategy: Literal["time", "random", "sorted"]
    order_by: str | None  # strategy=sorted: the column rows are ordered by before cutting
    train: DateRange | None
    val: DateRange | None
    production: DateRange | None
    fractions: Fractions | None

    @model_validator(mode="after")
    def _complete(self):
        if self.strategy in ("random", "sorted"):
            if self.fractions is None:
                raise At(
                    "fractions",
                    f"strategy={self.strategy} needs fractions for train, val, production",
                )
            if self.strategy == "sorted" and self.order_by is None:
                raise At("order_by", "strategy=sorted needs the column to order rows by")
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


class FeaturesConfig(Strict):
    """The model's inputs by type. Booleans are categorical (their values become the strings
    "True" and "False"), so there is no third type to keep apart."""

    numeric: UniqueNames | None  # null: every column not named elsewhere
    categorical: UniqueNames

    @model_validator(mode="after")
    def _disjoint(self):
        both = sorted(set(self.numeric or ()) & set(self.categorical))
        if both:
            raise At("categorical", f"{both[0]!r} is also listed under features.numeric")
        return self


MissingPolicy = Literal["impute", "reject"]


class DatasetConfig(Strict):
    name: str
    task: Task
    source: Target
    target: str
    time_column: str | None
    features: FeaturesConfig
    # What a missing feature value does: `default` for every feature, or per feature name.
    missing: dict[str, MissingPolicy]
    classes: UniqueNames | None
    split: SplitConfig
    personal: dict[str, Literal["hash", "drop"]]
    feedback: FeedbackConfig

    @model_validator(mode="after")
    def _time_column(self):
        if self.split.strategy == "time" and self.time_column is None:
            raise At("time_column", "split.strategy=time needs a time_column")
        if self.task == "regression" and self.classes is not None:
            raise At("classes", "a regression target is a number: classes must be null")
        if self.task == "binary" and self.classes is not None and len(self.classes) != 2:
            raise At("classes", f"task binary needs exactly 2 classes, got {len(self.classes)}")
        return self

    @model_validator(mode="after")
    def _missing(self):
        if "default" not in self.missing:
            raise At("missing", "needs a `default` policy (impute or reject)")
        declared = {*(self.features.numeric or ()), *self.features.categorical}
        for name in self.missing:
            if name != "default" and self.features.numeric is not None and name not in declared:
                raise At(f"missing.{name}", "is not a declared feature")
        return self


# ---------------------------------------------------------------- model and trainer
class ModelConfig(Strict):
    name: str
    net: Target
    module: Target
    optimizer: Optimizer
    loss: Target | None  # null: the task's loss (closedloop.models.nets.TASK_LOSS)
    batch_size: PositiveInt


class SelectionConfig(Strict):
    """trainer.selection: early stopping and the best-epoch checkpoint (training/selection.py)."""

    monitor: Annotated[str, Field(min_length=1)]
    mode: Literal["min", "max"]
    patience: Annotated[int, Field(ge=1)] | None
    min_delta: float = Field(ge=0)


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
    selection: SelectionConfig


# -------------------------------------------------------------- evaluation and gates
class MetricsConfig(Strict):
    name: str
    splits: Annotated[list[Split], Field(min_length=1)]
    ece_bins: Annotated[int, Field(ge=2)]
    calibration_bins: Annotated[int, Field(ge=2)]
    threshold: float = Field(gt=0, lt=1)
    compare: list[Comparable] | None
    confidence_level: float = Field(gt=0.5, lt=1)
    n_resamples: Annotated[int, Field(ge=100)]
    bootstrap_seed: int


class _Slice(Strict):
    name: str


class TimeSlice(_Slice):
    by: Literal["month", "season"]


class ClassSlice(_Slice):
    by: Literal["class"]


class CategoricalSlice(_Slice):
    """One slice set per categorical feature (slice_<feature>), values unseen in train as
    the out-of-vocabulary bucket."""

    by: Literal["categorical"]


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


SliceSpec = Annotated[
    TimeSlice | ClassSlice | CategoricalSlice | ColumnSlice | RangeSlice,
    Field(discriminator="by"),
]


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


class BaselineGate(Strict):
    metric: Comparable
    # closedloop.evaluation.baselines.NAMES
    baselines: Annotated[
        list[Literal["dummy", "best_constant", "persistence"]],
        Field(min_length=1),
        AfterValidator(_unique),
    ]
    margin: float = Field(ge=0)


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
    beat_baseline: BaselineGate | None
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

    @model_validator(mode="after")
    def _task_metrics(self):
        """Every metric a check names is one the dataset's task measures."""
        task = self.dataset.task
        known = metrics.names(task)
        named = [("metrics.compare", m) for m in self.metrics.compare or ()]
        named += [("gates.floors", m) for m in self.gates.floors]
        named += [("gates.vs_champion", c.metric) for c in self.gates.vs_champion]
        if self.gates.slice_regression is not None:
            named.append(("gates.slice_regression.metric", self.gates.slice_regression.metric))
        if self.gates.beat_baseline is not None:
            named.append(("gates.beat_baseline.metric", self.gates.beat_baseline.metric))
        for key, name in named:
            if name not in known:
                raise At(key, f"{name!r} is not a {task} metric (choose from: {', '.join(known)})")
        compared = compared_metrics(self.metrics.compare, task)
        for key, name in named[len(self.metrics.compare or ()) :]:
            if key != "gates.floors" and name not in compared:
                raise At(key, f"{name!r} is not compared with the champion (see metrics.compare)")
        return self


def compared_metrics(compare: list[str] | None, task: str) -> list[str]:
    """``metrics.compare``: as listed, or every comparable metric of the task when null."""
    return list(compare) if compare is not None else list(metrics.names(task, comparable=True))


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
