"""Deploy what models/registry.yaml names as production: verify, tag, call the hook.

Run by .github/workflows/deploy.yml after a promotion or rollback PR merges, and by hand:

    closedloop deploy verify   # gate verdict pass, weights resolve and match the hash
    closedloop deploy tag [--push]   # GTO-format tags: <model>@vX.Y.Z, <model>#prod#N
    closedloop deploy hook     # run deploy/hook.sh with the resolved model

Tags follow GTO's conventions, so `gto show` and `gto history` read this repository too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from closedloop.errors import RegistryError
from closedloop.paths import REGISTRY
from closedloop.registry.registry import load_registry, production_entry, resolve_model

HOOK = Path("deploy/hook.sh")


def _production(registry: Path) -> tuple[dict, dict]:
    reg = load_registry(registry)
    entry = production_entry(reg)
    if entry is None:
        raise RegistryError(f"{registry}: no production entry; nothing to deploy")
    return reg, entry


def verify(registry: Path = REGISTRY) -> dict:
    """The production entry passed its gate and its weights resolve to the recorded hash."""
    _, entry = _production(registry)
    verdict = entry["gate"]["verdict"]  # load_registry checked the entry's shape
    if verdict != "pass":
        raise RegistryError(
            f"{registry}: {entry['version']} has gate verdict {verdict!r}, not 'pass'"
        )
    with tempfile.TemporaryDirectory() as tmp:
        resolve_model(entry, Path(tmp) / "model")
    return entry


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def tag_names(reg: dict, entry: dict, existing: set[str]) -> list[str]:
    """The tags this deployment needs: registration once per version, a new prod assignment.

    Named and parsed by GTO's own functions (gto.tag), so `gto show` reads them as GTO's.
    """
    from gto.constants import Action
    from gto.tag import COUNT_DELIMITER, name_tag, parse_name

    model = reg["model"]
    version = entry["version"] if entry["version"].startswith("v") else f"v{entry['version']}"
    register = name_tag(Action.REGISTER, model, version=version, simple=True)
    tags = [] if register in existing else [register]
    counters = [
        parsed["counter"]
        for parsed in (parse_name(t, raise_on_fail=False) for t in existing)
        if parsed
        and parsed["name"] == model
        and parsed.get("stage") == "prod"
        and "counter" in parsed
    ]
    assign = name_tag(Action.ASSIGN, model, stage="prod", simple=True)
    tags.append(f"{assign}{COUNT_DELIMITER}{max(counters, default=0) + 1}")
    return tags


def tag(registry: Path = REGISTRY, push: bool = False) -> list[str]:
    reg, entry = _production(registry)
    existing = set(_git("tag", "--list").split())
    names = tag_names(reg, entry, existing)
    for name in names:
        _git(
            "tag",
            "-a",
            name,
            "-m",
            f"{entry['version']} ({entry['model_hash'][:12]}): {entry['change']}",
        )
    if push and names:
        _git("push", "origin", *names)
    return names


def hook(registry: Path = REGISTRY) -> None:
    """Hand the verified production model to the user's deploy hook."""
    _, entry = _production(registry)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_model(entry, Path(tmp) / "model")
        env = {
            **os.environ,
            "CLOSEDLOOP_VERSION": entry["version"],
            "CLOSEDLOOP_MODEL_HASH": entry["model_hash"],
            "CLOSEDLOOP_MODEL_DIR": str(model_dir),
        }
        subprocess.run(["bash", str(HOOK)], check=True, env=env)
