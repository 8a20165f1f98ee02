"""reports/drift.json: the verdict per column of Evidently's DataDriftPreset."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from closedloop.artefacts.base import Artefact
from closedloop.paths import DRIFT_JSON


class DriftColumn(Artefact):
    kind: Literal["feature", "target", "prediction"]
    method: str = Field(description="Evidently's test, e.g. 'K-S p_value'")
    score: float
    threshold: float
    drifted: bool = Field(description="Evidently's verdict: the test's direction stays its own")


class Side(Artefact):
    rows: int
    sampled_rows: int = Field(description="rows measured: at most params drift.row_cap")


class Reference(Side):
    source: Literal["champion", "candidate"] = Field(description="whose training data")
    version: str | None = Field(description="the champion's version")


class DriftReport(Artefact):
    PATH: ClassVar[Path] = DRIFT_JSON

    n_columns: int
    drifted_count: int
    drifted_share: float
    dataset_drift: bool = Field(description="drifted_share >= params drift.drift_share")
    columns: dict[str, DriftColumn]
    top_drifted: list[str] = Field(description="the drifted columns, most drifted first")
    reference: Reference
    current: Side = Field(description="the production window")
