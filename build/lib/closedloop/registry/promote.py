"""`closedloop promote`: record the current candidate as production in the registry.

Refuses unless reports/gate.json passes for this exact candidate and HEAD's dvc.lock records
it, so that the entry's commit resolves, through DVC, to the very weights the gate judged.
It only edits models/registry.yaml; production changes when a reviewed PR merges that edit.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import yaml

from closedloop.artefacts.card import ModelCard
from closedloop.artefacts.champion import EntryGate, RegistryEntry
from closedloop.artefacts.evaluation import Metrics
from closedloop.artefacts.gate import GateReport
from closedloop.errors import RegistryError
from closedloop.io import sha256_file
from closedloop.paths import CANDIDATE_DIR, CARD_JSON, GATE, METRICS, REGISTRY, WEIGHTS
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


def scalar_metrics(metrics: Metrics) -> dict[str, dict[str, int | float]]:
    """Per split, only the headline numbers (accuracy, macro_f1, ece, n), to keep entries small."""
    return {
        split: dict(sorted({"n": values.n, **values.model_extra}.items()))
        for split, values in sorted(metrics.items())
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

    gate = GateReport.read(root / GATE)
    if gate.verdict != "pass":
        raise RegistryError(f"{GATE}: verdict is {gate.verdict!r}, not 'pass'; refusing to promote")
    weights = root / CANDIDATE_DIR / WEIGHTS
    if not weights.is_file():
        raise RegistryError(f"{CANDIDATE_DIR / WEIGHTS}: not found; run `dvc repro` first")
    model_hash = sha256_file(weights)
    if gate.model_hash != model_hash:
        raise RegistryError(
            f"{GATE}: judged model {gate.model_hash[:12]} but {CANDIDATE_DIR}/ "
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

    entry = RegistryEntry(
        version=version,
        commit=commit,
        model_hash=model_hash,
        dvc_md5=md5,
        data_hash=ModelCard.read(root / CANDIDATE_DIR / CARD_JSON).data_hash,
        metrics=scalar_metrics(Metrics.read(root / METRICS)),
        gate=EntryGate(verdict=gate.verdict, split=gate.split),
        change=change,
        promoted_at=at or utc_now(),
    ).model_dump(mode="json")
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
