"""`python -m pipelines.rollback`: make an earlier registry entry production again.

Without --to it returns to the version that was production before the current one, walking
further back on each call (a version rolled back from is never returned to by accident). The
entries themselves are never modified: only `production` moves and `history` grows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.io import run_stage, write_text
from pipelines.paths import REGISTRY
from pipelines.registry import (
    RegistryError,
    describe,
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.rollback", description=__doc__)
    parser.add_argument("--to", help="version to restore (default: the previous production one)")
    parser.add_argument("--change", default="local", help="why, e.g. a PR or incident reference")
    parser.add_argument("--registry", type=Path, default=REGISTRY)
    parser.add_argument("--body-out", type=Path, help="write a pull-request body (Markdown) here")
    args = parser.parse_args(argv)
    _, entry, replaced = rollback(args.registry, args.to or None, args.change)
    if args.body_out:
        write_text(args.body_out, describe(entry, replaced, f"Roll back to {entry['version']}"))
    print(f"rollback: {entry['version']} is production in {args.registry}; was {replaced}")


if __name__ == "__main__":
    run_stage(main)
