"""One reader and one writer for every artefact, and the one-line message for a bad file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Self  # typing.Self from Python 3.11; pydantic depends on it

from closedloop.errors import DataError
from closedloop.io import write_json

# Strict: a number written as a string, a float where an int belongs or an unknown key is an
# error, not something coerced; frozen: what was read is what is judged.
STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


def absent() -> Any:
    """A field that is left out of the file, not written as null, when it is None."""
    return Field(default=None, exclude_if=lambda v: v is None)


def problem(e: ValidationError) -> str:
    """The first thing wrong, where it is (``checks[0].status``) and how many more there are."""
    errors = e.errors(include_url=False)
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    if first["type"] == "missing":
        what = "missing"
    elif first["type"] == "extra_forbidden":
        what = "unknown key"
    elif first["type"] in ("model_type", "dict_type") and not where:
        what = f"expected a JSON object, got {type(first['input']).__name__}"
    elif first["type"] == "value_error":
        what = first["msg"].removeprefix("Value error, ")
    else:
        what = f"{first['msg']}, got {first['input']!r}"[:200]
    more = (
        f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    )
    return f"{where}: {what}{more}" if where else f"{what}{more}"


def load(path: Path | str) -> Any:
    """The parsed JSON of ``path``; a missing, unreadable or malformed file is one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `dvc repro` to produce it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


class _File:
    """read/write for a pydantic model stored as one JSON file."""

    PATH: ClassVar[Path | None] = None  # where the loop keeps it, when that is one fixed place

    @classmethod
    def parse(cls, obj: Any, where: Path | str) -> Self:
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            raise DataError(f"{where}: {problem(e)}") from None

    @classmethod
    def read(cls, path: Path | str | None = None) -> Self:
        path = cls._path(path)
        return cls.parse(load(path), path)

    @classmethod
    def read_if_present(cls, path: Path | str | None = None) -> Self | None:
        """For the one artefact a stage can do without (drift.json: its gates then fail)."""
        path = cls._path(path)
        return cls.read(path) if path.exists() else None

    def write(self, path: Path | str | None = None) -> None:
        """Atomic and deterministic: sorted keys, two-space indent, no NaN, a final newline."""
        write_json(self._path(path), self.model_dump(mode="json"))

    @classmethod
    def _path(cls, path: Path | str | None) -> Path:
        if path is None:
            if cls.PATH is None:
                raise TypeError(f"{cls.__name__} has no fixed path; pass one")
            return cls.PATH
        return Path(path)


class Artefact(_File, BaseModel):
    model_config = STRICT
