"""artifacts/snapshot/schema.json: what collect resolved, and a content hash of each split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from closedloop.artefacts.base import STRICT, Artefact, absent
from closedloop.paths import SCHEMA


class SplitInfo(Artefact):
    rows: int
    hash: str = Field(description="content hash of the split's table")
    time_min: str | None = Field(description="first date (ISO), null without a time column")
    time_max: str | None = Field(description="last date (ISO): the gate's data age")


class FeedbackInfo(Artefact):
    """What the exported feedback contributed. The counts (rows in, kept, quarantined, per
    kind) are capture.feedback's, so they are typed as integers, not listed here; the rest says
    where the production window came from. Empty when feedback is disabled."""

    model_config = ConfigDict(**{**STRICT, "extra": "allow"})
    __pydantic_extra__: dict[str, int] = Field(init=False)

    production_from: Literal["dataset", "feedback"] | None = absent()
    production_reason: str | None = absent()
    feedback_train_rows: int | None = absent()
    feedback_production_rows: int | None = absent()
    production_window: list[str] | None = absent()


class SnapshotSchema(Artefact):
    PATH: ClassVar[Path] = SCHEMA

    dataset: str
    source: str | dict[str, Any] = Field(description="a built-in source, or its _target_ call")
    target: str
    time_column: str | None
    features: list[str]
    classes: list[str]
    splits: dict[str, SplitInfo]
    feedback_files: list[str] = Field(description="exported partitions under data/feedback/")
    feedback_ignored_files: list[str] = Field(
        description="files under data/feedback/ not named by the exporter"
    )
    feedback: FeedbackInfo
    data_hash: str = Field(description="hash of the splits' hashes: the snapshot's identity")
