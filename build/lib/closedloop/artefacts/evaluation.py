"""reports/metrics.json and reports/comparison.json: what evaluate measured.

Metric values are keyed by the names closedloop.metrics declares (``accuracy``,
``macro_f1``...), beside a few fixed keys, so a task that declares other metrics needs no
change here.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict, Field, RootModel, model_validator

from closedloop import metrics
from closedloop.artefacts.base import STRICT, Artefact, _File, absent
from closedloop.paths import COMPARISON, METRICS


def _known_names(names) -> None:
    known = {m.name for task in metrics.TASKS.values() for m in task}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(
            f"unknown metric(s) {unknown} (closedloop.metrics declares {sorted(known)})"
        )


# ------------------------------------------------------------------------- metrics.json
class ClassScores(Artefact):
    precision: float
    recall: float
    support: int


class SplitMetrics(Artefact):
    """The candidate on one split: ``n``, per-class detail, and one value per metric."""

    model_config = ConfigDict(**{**STRICT, "extra": "allow"})
    __pydantic_extra__: dict[str, float] = Field(init=False)

    n: int
    per_class: dict[str, ClassScores] | None = absent()  # left out when n is 0

    @model_validator(mode="after")
    def _metric_names(self):
        _known_names(self.model_extra)
        return self

    def value(self, metric: str) -> float | None:
        """The metric's value; None when it was not measured (no rows, or not this task's)."""
        return self.model_extra.get(metric)


class Metrics(_File, RootModel[dict[str, SplitMetrics]]):
    """Per split (val, production): what `dvc metrics diff` compares."""

    model_config = ConfigDict(strict=True, frozen=True)
    PATH: ClassVar[Path] = METRICS

    def __getitem__(self, split: str) -> SplitMetrics:
        return self.root[split]

    def __contains__(self, split: object) -> bool:
        return split in self.root

    def items(self):
        return self.root.items()

    def get(self, split: str) -> SplitMetrics | None:
        """A split's metrics; None for a split evaluate did not score (metrics.splits)."""
        return self.root.get(split)


# ---------------------------------------------------------------------- comparison.json
class MetricDelta(Artefact):
    """Candidate vs champion on the same rows; the champion's side is null without one."""

    candidate: float
    champion: float | None
    delta: float | None = Field(description="candidate - champion")
    ci_low: float | None = Field(description="paired bootstrap percentile CI of delta")
    ci_high: float | None


class McNemar(Artefact):
    b: int = Field(description="rows only the candidate gets right")
    c: int = Field(description="rows only the champion gets right")
    p_value: float


class SliceComparison(Artefact):
    """One slice value: ``n``, McNemar and its Holm-adjusted p, and one entry per metric."""

    model_config = ConfigDict(**{**STRICT, "extra": "allow"})
    __pydantic_extra__: dict[str, MetricDelta] = Field(init=False)

    n: int
    mcnemar: McNemar | None
    p_holm: float | None

    @model_validator(mode="after")
    def _metric_names(self):
        _known_names(self.model_extra)
        return self

    def metric(self, name: str) -> MetricDelta | None:
        return self.model_extra.get(name)


class SplitComparison(Artefact):
    n: int
    has_champion: bool
    overall: dict[str, MetricDelta]
    baseline: dict[str, float] = Field(description="a most-frequent-class dummy, per metric")
    mcnemar: McNemar | None
    slices: dict[str, dict[str, SliceComparison]] = Field(description="slice -> value -> scores")

    @model_validator(mode="after")
    def _metric_names(self):
        _known_names([*self.overall, *self.baseline])
        return self


class ComparedChampion(Artefact):
    version: str
    model_hash: str
    commit: str


class Comparison(Artefact):
    PATH: ClassVar[Path] = COMPARISON

    champion: ComparedChampion | None
    baseline_class: str = Field(description="the most frequent class of the training split")
    splits: dict[str, SplitComparison]
