"""models/candidate/card.json: how the candidate was trained, and the hash of its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from closedloop.artefacts.base import Artefact
from closedloop.paths import CANDIDATE_DIR, CARD_JSON


class ModelCard(Artefact):
    PATH: ClassVar[Path] = CANDIDATE_DIR / CARD_JSON

    model: dict[str, Any] = Field(description="params `model`, as trained")
    trainer: dict[str, Any] = Field(description="params `trainer`")
    seed: int
    dataset: str
    data_hash: str = Field(description="the snapshot it learned from (schema.json data_hash)")
    train_rows: int
    parameters: int
    epochs: int
    steps: int = Field(description="optimiser steps: the cost that is the same on every run")
    final: dict[str, float] = Field(description="the last epoch's losses and accuracy")
    device: str
    world_size: int
    versions: dict[str, str] = Field(description="python, torch and lightning")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
