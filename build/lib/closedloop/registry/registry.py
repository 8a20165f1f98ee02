"""models/registry.yaml: which model version is production, with its whole history.

The registry is a small YAML file in git, so the only way to change production is a commit,
and on main a reviewed pull request. An entry pins a model by the commit whose dvc.lock
records it and by the sha256 of its weights; `resolve_model` fetches it back through DVC at
that commit and refuses anything whose hash differs.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from closedloop import templating
from closedloop.artefacts.base import problem
from closedloop.artefacts.champion import RegistryEntry
from closedloop.errors import RegistryError
from closedloop.io import atomic_dir, sha256_file, write_text
from closedloop.paths import CANDIDATE_DIR, REFERENCE_DATA, REGISTRY, SNAPSHOT_DIR, WEIGHTS

VERSION_RE = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
ACTIONS = ("promote", "rollback")

HEADER = """\
# Which model version is in production, with its whole history.
# Written only by `closedloop promote` and `closedloop rollback` (make
# promote / make rollback); a change reaches main through a reviewed pull request
# (.github/CODEOWNERS). Rolling back is also one `git revert` of such a PR away.
# An entry pins a model by the commit whose dvc.lock records models/candidate and by the
# sha256 of its weights; the champion stage and deploy refuse weights that do not match.
"""
KEY_COMMENTS = {
    "model": "model name, used in release tags (<model>@vX.Y.Z)",
    "production": "version of the production entry, or null before the first promotion",
    "versions": "promoted entries, oldest first; never modified once written",
    "history": "append-only log of promote and rollback events",
}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_registry(model: str = "closedloop") -> dict:
    return {"model": model, "production": None, "versions": [], "history": []}


# ------------------------------------------------------------------ load and save
def load_registry(path: Path | str = REGISTRY) -> dict:
    """The registry, checked: a hand-edited or corrupt file fails here, not at deploy time."""
    path = Path(path)
    try:
        reg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RegistryError(f"{path}: unreadable ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise RegistryError(f"{path}: not valid YAML ({problem}{where})") from None
    problem = check_registry(reg)
    if problem:
        raise RegistryError(f"{path}: {problem}")
    return reg


def check_registry(reg: Any) -> str | None:
    """What is wrong with a parsed registry, or None when it is consistent."""
    if not isinstance(reg, dict) or set(reg) != set(KEY_COMMENTS):
        got = sorted(reg) if isinstance(reg, dict) else type(reg).__name__
        return f"expected a mapping with exactly the keys {list(KEY_COMMENTS)}, got {got}"
    if not isinstance(reg["model"], str) or not reg["model"]:
        return f"model: expected a non-empty string, got {reg['model']!r}"
    for key in ("versions", "history"):
        if not isinstance(reg[key], list):
            return f"{key}: expected a list, got {type(reg[key]).__name__}"
    seen: set[str] = set()
    for i, entry in enumerate(reg["versions"]):
        if not isinstance(entry, dict):
            return f"versions[{i}]: expected a mapping, got {type(entry).__name__}"
        try:
            RegistryEntry.model_validate(entry)
        except ValidationError as e:
            where, _, what = problem(e).partition(": ")
            if what.startswith("missing"):
                return f"versions[{i}]: missing {where}{what.removeprefix('missing')}"
            return f"versions[{i}].{where}: {what}"
        if entry["version"] in seen:
            return f"versions[{i}]: version {entry['version']} appears twice"
        seen.add(entry["version"])
    for i, event in enumerate(reg["history"]):
        if not isinstance(event, dict):
            return f"history[{i}]: expected a mapping, got {type(event).__name__}"
        if event.get("action") not in ACTIONS:
            return (
                f"history[{i}].action: expected one of {list(ACTIONS)}, got {event.get('action')!r}"
            )
        if not _known(event.get("version"), seen):
            return f"history[{i}].version: {event.get('version')!r} is not in versions"
        if event.get("previous") is not None and not _known(event["previous"], seen):
            return f"history[{i}].previous: {event['previous']!r} is not in versions"
        for field in ("at", "change"):
            if not isinstance(event.get(field), str):
                return f"history[{i}].{field}: expected a string, got {event.get(field)!r}"
    production = reg["production"]
    if production is not None and not _known(production, seen):
        return f"production: {production!r} is not in versions"
    last = reg["history"][-1]["version"] if reg["history"] else None
    if production != last:
        return (
            f"production: {production!r} disagrees with the last history event ({last!r}); "
            "change production only with closedloop promote or closedloop rollback"
        )
    return None


def _known(version: Any, versions: set[str]) -> bool:
    return isinstance(version, str) and version in versions


def dump_registry(reg: dict) -> str:
    """YAML with the explanatory header and a comment on each top-level key."""
    parts = [HEADER]
    for key, comment in KEY_COMMENTS.items():
        lines = yaml.safe_dump(
            {key: reg[key]}, sort_keys=False, default_flow_style=False, allow_unicode=True
        ).splitlines()
        lines[0] += f"  # {comment}"
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def save_registry(reg: dict, path: Path | str = REGISTRY) -> None:
    """Check, then write atomically: a killed process leaves the old file or the new one."""
    problem = check_registry(reg)
    if problem:
        raise RegistryError(f"{path}: refusing to write an inconsistent registry: {problem}")
    write_text(path, dump_registry(reg))


# ----------------------------------------------------------------------- queries
def find_version(reg: dict, version: str) -> dict | None:
    return next((e for e in reg["versions"] if e["version"] == version), None)


def production_entry(reg: dict) -> dict | None:
    return None if reg["production"] is None else find_version(reg, reg["production"])


def next_version(reg: dict) -> str:
    """The highest version with its minor number bumped; v1.0.0 for the first."""
    parsed = [tuple(map(int, VERSION_RE.fullmatch(e["version"]).groups())) for e in reg["versions"]]
    if not parsed:
        return "v1.0.0"
    major, minor, _ = max(parsed)
    return f"v{major}.{minor + 1}.0"


def lineage(reg: dict) -> list[str]:
    """Production versions as a stack, replayed from history.

    A promotion pushes; a rollback to a version already on the stack pops back to it, so a
    second rollback walks further back instead of returning to the version just abandoned.
    A rollback to a version not on the stack (rolling forward again) pushes it.
    """
    stack: list[str] = []
    for event in reg["history"]:
        version = event["version"]
        if event["action"] == "rollback" and version in stack:
            del stack[len(stack) - stack[::-1].index(version) :]
        else:
            stack.append(version)
    return stack


def record(reg: dict, action: str, version: str, change: str, at: str) -> dict:
    """Make ``version`` production and log it; entries in ``versions`` are left untouched."""
    reg["history"].append(
        {
            "action": action,
            "version": version,
            "previous": reg["production"],
            "at": at,
            "change": change,
        }
    )
    reg["production"] = version
    return reg


# ------------------------------------------------------------------- resolution
def resolve_model(entry: dict, dest: Path | str, repo_root: Path | str = Path(".")) -> Path:
    """Materialise an entry's models/candidate (and its training split) into ``dest``.

    DVC reads the recorded commit's dvc.lock and takes the files from the local cache, or a
    remote when the cache lacks them. The weights must hash to ``model_hash``; otherwise
    nothing is written and ``dest`` keeps what it had.
    """
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    dest = Path(dest)
    where = f"{entry['version']} (commit {entry['commit'][:12]})"
    with atomic_dir(dest) as tmp:
        staged = tmp / "model"
        fs = None
        try:
            fs = DVCFileSystem(str(repo_root), rev=entry["commit"])
            fs.get(CANDIDATE_DIR.as_posix(), str(staged), recursive=True)
            fs.get_file((SNAPSHOT_DIR / REFERENCE_DATA).as_posix(), str(staged / REFERENCE_DATA))
        except (DvcException, DataIndexError, OSError) as e:
            raise RegistryError(
                f"{where}: cannot fetch its model through DVC ({e}); "
                "is the commit fetched and the DVC cache or remote reachable (`dvc pull`)?"
            ) from None
        finally:
            if fs is not None:
                fs.close()
        weights = staged / WEIGHTS
        got = sha256_file(weights) if weights.is_file() else "no model.safetensors"
        if got != entry["model_hash"]:
            raise RegistryError(
                f"{where}: {WEIGHTS} hash mismatch: expected {entry['model_hash']}, got {got}; "
                "refusing to use it"
            )
        for item in staged.iterdir():
            item.rename(tmp / item.name)
        staged.rmdir()
    return dest


def describe(entry: dict, previous: str | None, action: str) -> str:
    """A pull-request body for a registry change (template registry_pr.md.j2): what becomes
    production, and its evidence. ``action`` is promote or rollback."""
    checked = RegistryEntry.model_validate(entry)
    title = (
        f"Promote {checked.version}" if action == "promote" else f"Roll back to {checked.version}"
    )
    return templating.render(
        "registry_pr.md.j2",
        title=title,
        action=action,
        entry=checked,
        previous=previous,
        metric_names=sorted({k for split in checked.metrics.values() for k in split}),
    )
