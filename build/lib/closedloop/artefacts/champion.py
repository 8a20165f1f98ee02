"""models/champion/entry.json: the production entry of models/registry.yaml, resolved.

``{"present": false}`` before the first promotion; otherwise ``{"present": true}`` and the
entry. ``RegistryEntry`` is also the shape of each of the registry's ``versions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from closedloop.artefacts.base import Artefact, load
from closedloop.errors import DataError
from closedloop.io import write_json
from closedloop.paths import CHAMPION_ENTRY

Verdict = Literal["pass", "fail", "inconclusive"]


class EntryGate(Artefact):
    verdict: Verdict
    split: str | None = Field(description="the split the gate judged")


class RegistryEntry(Artefact):
    """A promoted model, pinned by the commit whose dvc.lock records it and its weights' hash."""

    version: str = Field(pattern=r"^v\d+\.\d+\.\d+$", description="a version like v1.2.0")
    commit: str = Field(pattern=r"^[0-9a-f]{40}$", description="a 40-digit git sha")
    model_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights")
    dvc_md5: str = Field(description="DVC's md5 of models/candidate at that commit")
    data_hash: str
    metrics: dict[str, dict[str, int | float]] = Field(description="headline metrics per split")
    gate: EntryGate
    change: str = Field(description="what brought it, e.g. a pull request")
    promoted_at: str = Field(description="UTC, ISO 8601")


class ChampionEntry(RegistryEntry):
    PATH: ClassVar[Path] = CHAMPION_ENTRY

    present: Literal[True]

    @classmethod
    def read(cls, path: Path | str | None = None) -> ChampionEntry | None:
        """The champion, or None before the first promotion."""
        path = cls._path(path)
        obj = load(path)
        if isinstance(obj, dict) and obj.get("present") is False:
            extra = sorted(set(obj) - set(NO_CHAMPION))
            if extra:
                raise DataError(f"{path}: present is false, so it takes no other key (got {extra})")
            return None
        return cls.parse(obj, path)


NO_CHAMPION = {"present": False}


def write_no_champion(path: Path | str = CHAMPION_ENTRY) -> None:
    write_json(path, NO_CHAMPION)
