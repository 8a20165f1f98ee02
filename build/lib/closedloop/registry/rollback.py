"""`closedloop rollback`: make an earlier registry entry production again.

Without --to it returns to the version that was production before the current one, walking
further back on each call (a version rolled back from is never returned to by accident). The
entries themselves are never modified: only `production` moves and `history` grows.
"""

from __future__ import annotations

from pathlib import Path

from closedloop.errors import RegistryError
from closedloop.paths import REGISTRY
from closedloop.registry.registry import (
    find_version,
    lineage,
    load_registry,
    record,
    save_registry,
    utc_now,
)


def rollback(
    registry: Path = REGISTRY, to: str | None = None, change: str = "local", at: str | None = None
) -> tuple[dict, dict, str]:
    """Make ``to`` (default: the previous production version) production.

    Returns the registry, the restored entry and the version it replaced.
    """
    reg = load_registry(registry)
    current = reg["production"]
    if current is None:
        raise RegistryError(f"{registry}: nothing is in production; nothing to roll back")
    if to is None:
        stack = lineage(reg)
        if len(stack) < 2:
            raise RegistryError(
                f"{registry}: {current} is the earliest production version left; "
                "nothing to roll back to"
            )
        to = stack[-2]
    elif find_version(reg, to) is None:
        known = ", ".join(e["version"] for e in reg["versions"])
        raise RegistryError(f"{registry}: unknown version {to!r} (known: {known})")
    elif to == current:
        raise RegistryError(f"{registry}: {to} is already production")
    record(reg, "rollback", to, change, at or utc_now())
    save_registry(reg, registry)
    return reg, find_version(reg, to), current
