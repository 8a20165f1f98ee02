"""reports/gate.json: the verdict on the candidate and every check behind it.

The contract other tools read: ``{"verdict": "pass"|"fail"|"inconclusive", "checks": [{"name",
"passed", "value", "threshold", "reason"}]}``; its JSON Schema is published as
schemas/gate.schema.json (``closedloop schema``), generated from ``GateReport``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from closedloop.artefacts.base import Artefact
from closedloop.paths import GATE

Status = Literal["pass", "fail", "inconclusive"]
Number = int | float


class Check(Artefact):
    """One gate. Inconclusive is never a pass: ``passed`` is true only for status pass."""

    name: str = Field(description="e.g. floor:accuracy, vs_champion:macro_f1, slice:season=winter")
    passed: bool
    status: Status
    value: Number | None = Field(description="what was measured; null when it is missing")
    threshold: Number | None = Field(description="what it was held to; null when none applies")
    reason: str = Field(description="one sentence a reviewer reads")

    @model_validator(mode="after")
    def _passed_means_pass(self):
        if self.passed != (self.status == "pass"):
            raise ValueError(f"passed is {self.passed} but status is {self.status!r}")
        return self


class GateChampion(Artefact):
    version: str
    model_hash: str


class GateReport(Artefact):
    """The verdict: any fail fails; otherwise any inconclusive is inconclusive; else pass."""

    PATH: ClassVar[Path] = GATE

    verdict: Status
    model_hash: str = Field(description="sha256 of the candidate's weights this verdict is for")
    champion: GateChampion | None = Field(description="null before the first promotion")
    split: str = Field(description="the split that judged")
    policy: str = Field(description="vs_champion, or the first-model policy")
    checks: list[Check]

    @model_validator(mode="after")
    def _verdict_follows_checks(self):
        expected = verdict_of(self.checks)
        if self.verdict != expected:
            raise ValueError(f"verdict is {self.verdict!r} but the checks give {expected!r}")
        return self


def verdict_of(checks: list[Check]) -> Status:
    statuses = {c.status for c in checks}
    return (
        "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"
    )


def json_schema() -> str:
    """The text of schemas/gate.schema.json (JSON Schema 2020-12), as committed."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **GateReport.model_json_schema(),
    }
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
