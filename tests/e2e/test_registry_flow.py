"""Promotion, rollback and the champion stage in real projects: dvc repro, git, the DVC cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from closedloop.errors import RegistryError
from closedloop.io import sha256_file
from closedloop.registry.champion import build_champion
from closedloop.registry.promote import promote
from closedloop.registry.registry import (
    load_registry,
    production_entry,
    resolve_model,
)
from closedloop.registry.rollback import rollback
from tests.conftest import REG, WEIGHTS, assert_one_line_error, cli, make_project, run


# ------------------------------------------- real projects: dvc repro, git, DVC cache
def commit(root: Path, message: str) -> str:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message], root)
    return run(["git", "rev-parse", "HEAD"], root).stdout.strip()


def write_gate(root: Path, verdict: str = "pass", model_hash: str | None = None) -> None:
    """What the gate stage writes: a verdict for one exact candidate."""
    gate = {
        "verdict": verdict,
        "model_hash": model_hash or sha256_file(root / WEIGHTS),
        "champion": None,
        "split": "production",
        "policy": "first_model:floors_only",
        "checks": [
            {
                "name": "floor:accuracy",
                "passed": verdict == "pass",
                "status": verdict,
                "value": 0.45,
                "threshold": 0.4,
                "reason": "written by the test",
            }
        ],
    }
    (root / "reports/gate.json").write_text(json.dumps(gate))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with a trained candidate whose dvc.lock and passing gate are committed."""
    root = make_project(tmp_path_factory.mktemp("registry"))
    run(["dvc", "repro", "train"], root)
    write_gate(root)
    commit(root, "candidate 1 with a passing gate")
    return root


@pytest.mark.parametrize(
    "case", ["fail", "inconclusive", "other model", "dvc.lock uncommitted", "weights not locked"]
)
def test_promote_refusals_leave_the_registry_untouched(project, case):
    gate = (project / "reports/gate.json").read_bytes()
    lock = (project / "dvc.lock").read_bytes()
    weights = (project / WEIGHTS).read_bytes()
    before = (project / REG).read_bytes()
    try:
        if case in ("fail", "inconclusive"):
            write_gate(project, case)
            culprit = f"verdict is '{case}'"
        elif case == "other model":
            write_gate(project, model_hash="0" * 64)
            culprit = "judged model 000000000000"
        elif case == "dvc.lock uncommitted":  # a retrained candidate, its lock not committed
            md5 = yaml.safe_load(lock)["stages"]["train"]["outs"][0]["md5"]
            (project / "dvc.lock").write_text(lock.decode().replace(md5, "f" * 32 + ".dir"))
            culprit = "commit dvc.lock first"
        else:  # weights judged by the gate (a runner's retrain) that the committed lock lacks
            (project / WEIGHTS).unlink()  # DVC links it from the cache: never write through
            (project / WEIGHTS).write_bytes(weights + b" ")
            write_gate(project)
            culprit = "hash mismatch"
        assert_one_line_error(cli("promote", cwd=project), culprit)
        assert (project / REG).read_bytes() == before
    finally:
        (project / "reports/gate.json").write_bytes(gate)
        (project / "dvc.lock").write_bytes(lock)
        (project / WEIGHTS).unlink()
        (project / WEIGHTS).write_bytes(weights)


@pytest.fixture(scope="module")
def history(project) -> dict:
    """v1 promoted and its PR merged; then a retrain (another lr) promoted as the next version."""
    hash1 = sha256_file(project / WEIGHTS)
    card1 = json.loads((project / "models/candidate/card.json").read_text())
    _, v1, _ = promote(project, change="PR #1", at="2026-01-01T00:00:00Z")
    head1 = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    commit(project, "promote v1 (the merged promotion PR)")

    mlp = project / "conf/model/mlp.yaml"
    retuned = re.sub(r"^  lr: \S+", "  lr: 0.0123", mlp.read_text(), count=1, flags=re.M)
    assert retuned != mlp.read_text()
    mlp.write_text(retuned)
    run(["dvc", "repro", "train"], project)
    write_gate(project)
    refused = cli("promote", cwd=project)  # retrained, gate passed, dvc.lock not committed
    head2 = commit(project, "candidate 2 with a passing gate")
    body = project / "reports/promotion.md"
    cli("promote", "--change", "PR #2", "--body-out", str(body), cwd=project, check=True)
    commit(project, "promote v2")
    return {
        "v1": v1,
        "hash1": hash1,
        "card1": card1,
        "head1": head1,
        "head2": head2,
        "refused": refused,
        "body": body,
    }


def test_promote_records_the_committed_candidate(project, history):
    reg = load_registry(project / REG)
    v1, v2 = reg["versions"]
    assert v1 == history["v1"]
    lock1 = yaml.safe_load(run(["git", "show", f"{history['head1']}:dvc.lock"], project).stdout)
    assert v1["version"] == "v1.0.0" and v1["commit"] == history["head1"]
    assert v1["model_hash"] == history["card1"]["weights_sha256"] == history["hash1"]
    assert v1["data_hash"] == history["card1"]["data_hash"]
    assert v1["dvc_md5"] == lock1["stages"]["train"]["outs"][0]["md5"]
    assert v1["gate"] == {"verdict": "pass", "split": "production"}
    assert v1["change"] == "PR #1" and v1["promoted_at"] == "2026-01-01T00:00:00Z"
    assert set(v1["metrics"]["production"]) == {"accuracy", "macro_f1", "ece", "n"}

    card2 = json.loads((project / "models/candidate/card.json").read_text())
    assert v2["version"] == "v1.1.0" and v2["commit"] == history["head2"]
    assert v2["model_hash"] == sha256_file(project / WEIGHTS) == card2["weights_sha256"]
    assert v2["data_hash"] == card2["data_hash"]
    assert v2["model_hash"] != v1["model_hash"] and v2["dvc_md5"] != v1["dvc_md5"]
    assert [(e["action"], e["version"], e["previous"]) for e in reg["history"]] == [
        ("promote", "v1.0.0", None),
        ("promote", "v1.1.0", "v1.0.0"),
    ]
    assert_one_line_error(history["refused"], "commit dvc.lock first")
    assert "v1.0.0 → **v1.1.0**" in history["body"].read_text()


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--version", "v1.0.0"], "version v1.0.0 already exists"),
        (["--version", "1.3"], "expected a version like v1.2.0"),
        ([], "already registered as v1.1.0"),
    ],
)
def test_promote_refuses_duplicates(project, history, args, culprit):
    before = (project / REG).read_bytes()
    assert_one_line_error(cli("promote", *args, cwd=project), culprit)
    assert (project / REG).read_bytes() == before


def test_rollback_restores_the_v1_entry_exactly(project, history):
    if load_registry(project / REG)["production"] != "v1.1.0":  # run out of order
        rollback(project / REG, to="v1.1.0", change="test")
    before = load_registry(project / REG)
    cli("rollback", "--change", "incident 7", cwd=project, check=True)
    reg = load_registry(project / REG)
    assert reg["production"] == "v1.0.0"
    assert production_entry(reg) == history["v1"]
    assert reg["versions"] == before["versions"]
    assert reg["history"][:-1] == before["history"]
    event = reg["history"][-1]
    assert (event["action"], event["version"], event["previous"], event["change"]) == (
        "rollback",
        "v1.0.0",
        "v1.1.0",
        "incident 7",
    )
    unchanged = (project / REG).read_bytes()
    assert_one_line_error(cli("rollback", cwd=project), "nothing to roll back to")
    assert (project / REG).read_bytes() == unchanged


def production_v1(project: Path) -> None:
    if load_registry(project / REG)["production"] != "v1.0.0":
        rollback(project / REG, to="v1.0.0", change="test")


def test_champion_stage_resolves_v1_from_the_local_cache(project, history):
    """The workspace holds candidate 2; the champion is v1, from the cache at its commit."""
    production_v1(project)
    assert run(["dvc", "remote", "list"], project).stdout.strip() == ""  # local cache only
    assert sha256_file(project / WEIGHTS) != history["v1"]["model_hash"]
    run(["dvc", "repro", "champion"], project)
    champ = project / "models/champion"
    assert sha256_file(champ / "model.safetensors") == history["v1"]["model_hash"]
    assert sorted(p.name for p in champ.iterdir()) == [
        "card.json",
        "card.md",
        "config.json",
        "entry.json",
        "model.safetensors",
        "train.parquet",
    ]
    assert json.loads((champ / "entry.json").read_text()) == {"present": True, **history["v1"]}
    card = json.loads((champ / "card.json").read_text())
    assert card["weights_sha256"] == history["v1"]["model_hash"]
    assert sha256_file(champ / "train.parquet") == sha256_file(
        project / "artifacts/snapshot/train.parquet"
    )  # the data did not change between the two trainings


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_champion_refuses_a_hash_mismatch_and_keeps_the_previous(project, history):
    production_v1(project)
    champ = project / "models/champion"
    build_champion(project / REG, champ, project)
    good = snapshot(champ)
    registry = (project / REG).read_text()
    v1_hash = history["v1"]["model_hash"]
    try:  # the registry names other weights than DVC holds at that commit
        (project / REG).write_text(registry.replace(v1_hash, "a" * 64))
        assert_one_line_error(cli("champion", cwd=project), "hash mismatch", "a" * 64)
        assert snapshot(champ) == good
    finally:
        (project / REG).write_text(registry)

    # the cached weights themselves tampered with
    md5 = hashlib.md5(good["model.safetensors"]).hexdigest()
    cached = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    original, mode = cached.read_bytes(), cached.stat().st_mode
    os.chmod(cached, 0o644)
    try:
        cached.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert_one_line_error(cli("champion", cwd=project), "hash mismatch", v1_hash)
        assert snapshot(champ) == good
    finally:
        cached.write_bytes(original)
        os.chmod(cached, mode)


def test_resolving_without_the_cache_or_a_remote_is_a_one_line_error(project, history, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    dest = tmp_path / "model"
    with pytest.raises(RegistryError, match="cannot fetch its model through DVC") as e:
        resolve_model(history["v1"], dest, clone)
    assert "\n" not in str(e.value)
    assert not dest.exists()
