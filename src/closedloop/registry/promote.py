"""`closedloop promote`: record the current candidate as production in the registry.

Refuses unless reports/gate.json passes for this exact candidate and HEAD's dvc.lock records
it, so that the entry's commit resolves, through DVC, to the very weights the gate judged.
It only edits models/registry.yaml; production changes when a reviewed PR merges that edit.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from closedloop.errors import RegistryError
from closedloop.io import read_json, sha256_file
from closedloop.paths import CANDIDATE_DIR, CARD_JSON, GATE, METRICS, PARAMS, REGISTRY, WEIGHTS
from closedloop.registry.registry import (
    VERSION_RE,
    find_version,
    load_registry,
    next_version,
    record,
    resolve_model,
    save_registry,
    utc_now,
)

LOCK = Path("dvc.lock")


def _json(path: Path) -> dict:
    try:
        obj = read_json(path)
    except FileNotFoundError:
        raise RegistryError(f"{path}: not found; run `dvc repro` first") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RegistryError(f"{path}: unreadable ({e})") from None
    if not isinstance(obj, dict):
        raise RegistryError(f"{path}: expected a JSON object")
    return obj


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise RegistryError(f"git {' '.join(args)}: {why}")
    return proc.stdout


def candidate_md5(lock_text: str, where: str) -> str:
    """The md5 a dvc.lock records for the models/candidate output."""
    try:
        lock = yaml.safe_load(lock_text) or {}
        for stage in lock.get("stages", {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == CANDIDATE_DIR.as_posix():
                    return out["md5"]
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        raise RegistryError(f"{where}: not a readable dvc.lock") from None
    raise RegistryError(f"{where}: records no {CANDIDATE_DIR} output; run `dvc repro`")


def gate_split(gate: dict, root: Path) -> str | None:
    """The split the gate judged: from gate.json, else from params.yaml's gates.split."""
    if gate.get("split"):
        return gate["split"]
    params = root / PARAMS
    if not params.exists():
        return None
    gates = (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("gates") or {}
    return gates.get("split")


def scalar_metrics(metrics: dict) -> dict:
    """Per split, only the headline numbers (accuracy, macro_f1, ece, n), to keep entries small."""
    return {
        split: {k: v for k, v in sorted(values.items()) if isinstance(v, int | float)}
        for split, values in sorted(metrics.items())
        if isinstance(values, dict)
    }


def promote(
    root: Path = Path("."),
    registry: Path | None = None,
    version: str | None = None,
    change: str = "local",
    at: str | None = None,
) -> tuple[dict, dict, str | None]:
    """Append the candidate as a new entry and make it production.

    Returns the registry, the entry and the previous production version.
    """
    root = Path(root)
    registry = Path(registry) if registry is not None else root / REGISTRY
    reg = load_registry(registry)
    if version is None:
        version = next_version(reg)
    elif not VERSION_RE.fullmatch(version):
        raise RegistryError(f"--version {version!r}: expected a version like v1.2.0")
    elif find_version(reg, version) is not None:
        raise RegistryError(f"{registry}: version {version} already exists")

    gate = _json(root / GATE)
    if gate.get("verdict") != "pass":
        raise RegistryError(
            f"{GATE}: verdict is {gate.get('verdict')!r}, not 'pass'; refusing to promote"
        )
    weights = root / CANDIDATE_DIR / WEIGHTS
    if not weights.is_file():
        raise RegistryError(f"{CANDIDATE_DIR / WEIGHTS}: not found; run `dvc repro` first")
    model_hash = sha256_file(weights)
    if gate.get("model_hash") != model_hash:
        raise RegistryError(
            f"{GATE}: judged model {str(gate.get('model_hash'))[:12]} but {CANDIDATE_DIR}/ "
            f"holds {model_hash[:12]}; rerun `dvc repro` before promoting"
        )
    taken = next((e for e in reg["versions"] if e["model_hash"] == model_hash), None)
    if taken is not None:
        raise RegistryError(
            f"{registry}: this candidate is already registered as {taken['version']}; "
            f"to make it production again: closedloop rollback --to {taken['version']}"
        )

    commit = _git(root, "rev-parse", "HEAD").strip()
    md5 = candidate_md5(_git(root, "show", f"HEAD:{LOCK}"), f"{LOCK} at HEAD")
    if candidate_md5((root / LOCK).read_text(encoding="utf-8"), str(LOCK)) != md5:
        raise RegistryError(
            f"{LOCK}: the {CANDIDATE_DIR} it records is not the one committed at HEAD "
            f"({commit[:12]}); commit dvc.lock first"
        )

    entry = {
        "version": version,
        "commit": commit,
        "model_hash": model_hash,
        "dvc_md5": md5,
        "data_hash": _json(root / CANDIDATE_DIR / CARD_JSON).get("data_hash"),
        "metrics": scalar_metrics(_json(root / METRICS)),
        "gate": {"verdict": gate["verdict"], "split": gate_split(gate, root)},
        "change": change,
        "promoted_at": at or utc_now(),
    }
    # The entry must resolve, through DVC at that commit, to the weights the gate judged.
    with tempfile.TemporaryDirectory() as tmp:
        resolve_model(entry, Path(tmp) / "model", root)
    previous = reg["production"]
    reg["versions"].append(entry)
    record(reg, "promote", version, change, entry["promoted_at"])
    save_registry(reg, registry)
    return reg, entry, previous


def registered_as(registry: Path = REGISTRY, root: Path = Path(".")) -> str | None:
    """The version the current candidate is registered as, if any."""
    digest = sha256_file(root / CANDIDATE_DIR / WEIGHTS)
    entry = next(
        (e for e in load_registry(registry)["versions"] if e["model_hash"] == digest), None
    )
    return entry["version"] if entry else None
