"""The registry, promotion, rollback and the champion stage, on real git + DVC repositories."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from closedloop.errors import RegistryError
from closedloop.io import sha256_file
from closedloop.registry.champion import build_champion
from closedloop.registry.promote import promote
from closedloop.registry.registry import (
    dump_registry,
    empty_registry,
    load_registry,
    next_version,
    production_entry,
    record,
    resolve_model,
    save_registry,
)
from closedloop.registry.rollback import rollback
from tests.conftest import ROOT, make_project, run

REG = Path("models/registry.yaml")
WEIGHTS = Path("models/candidate/model.safetensors")
PY_ENV = {"PYTHONPATH": str(ROOT)}  # pipelines/ from here; it puts src/ first itself


def entry(i: int, version: str) -> dict:
    """A well-formed registry entry; only its version and hashes vary."""
    return {
        "version": version,
        "commit": format(i, "040x"),
        "model_hash": format(i, "064x"),
        "dvc_md5": f"{i:032x}.dir",
        "data_hash": "d" * 64,
        "metrics": {"production": {"accuracy": 0.5, "n": 100}},
        "gate": {"verdict": "pass", "split": "production"},
        "change": f"PR #{i}",
        "promoted_at": f"2026-01-0{i}T00:00:00Z",
    }


def promoted(*versions: str) -> dict:
    """A registry with these versions promoted one after another."""
    reg = empty_registry()
    for i, v in enumerate(versions, 1):
        reg["versions"].append(entry(i, v))
        record(reg, "promote", v, f"PR #{i}", f"2026-01-0{i}T00:00:00Z")
    return reg


def cli(command: str, *args: str, cwd: Path, check: bool = False):
    """`closedloop COMMAND`, or the DVC stage `python -m pipelines.champion`."""
    module = ["pipelines.champion"] if command == "champion" else ["closedloop", command]
    return run([sys.executable, "-m", *module, *args], cwd, check, PY_ENV)


def assert_one_line_error(proc, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


# ---------------------------------------------------------------- the file itself
def test_committed_registry_is_empty_and_canonical():
    reg = load_registry(ROOT / REG)
    assert reg == empty_registry()
    assert (ROOT / REG).read_text() == dump_registry(reg)


def test_save_and_load_round_trip(tmp_path):
    reg = promoted("v1.0.0", "v1.1.0")
    reg["versions"][0]["commit"] = "1234567" + "0" * 33  # digits only: must stay a string
    reg["versions"][0]["dvc_md5"] = "12e4"  # would read back as a float unquoted
    path = tmp_path / "registry.yaml"
    save_registry(reg, path)
    assert load_registry(path) == reg
    assert path.read_text().startswith("# Which model version is in production")


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("versions: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("model: closedloop\nproduction: null\nversions: {}\nhistory: []\n", "versions"),
        ("model: closedloop\nproduction: v9.0.0\nversions: []\nhistory: []\n", "v9.0.0"),
        ("model: 3\nproduction: null\nversions: []\nhistory: []\n", "model"),
        ("model: m\nproduction: [v1]\nversions: []\nhistory: []\n", "production"),
    ],
)
def test_corrupt_registry_is_a_one_line_error(tmp_path, text, culprit):
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as e:
        load_registry(path)
    assert str(path) in str(e.value) and culprit in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("edit", "culprit"),
    [
        (lambda r: r["versions"][0].update(model_hash="xyz"), "versions[0].model_hash"),
        (lambda r: r["versions"][1].pop("commit"), "versions[1]: missing commit"),
        (lambda r: r["versions"][1].update(version="v1.0.0"), "appears twice"),
        (lambda r: r.update(production="v1.0.0"), "disagrees with the last history event"),
        (lambda r: r["history"][0].update(action="delete"), "history[0].action"),
        (lambda r: r.update(extra=1), "exactly the keys"),
    ],
)
def test_inconsistent_registry_is_refused(tmp_path, edit, culprit):
    reg = promoted("v1.0.0", "v1.1.0")
    edit(reg)
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(reg))
    with pytest.raises(RegistryError) as e:
        load_registry(path)
    assert culprit in str(e.value)


def test_cli_reports_a_corrupt_registry_in_one_line_and_leaves_it(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_bytes(b"production: [\x00garbage")
    proc = cli("rollback", "--registry", str(path), cwd=tmp_path)
    assert_one_line_error(proc, str(path))
    assert path.read_bytes() == b"production: [\x00garbage"


def test_next_version_bumps_the_highest_minor_numerically():
    assert next_version(empty_registry()) == "v1.0.0"
    assert next_version(promoted("v1.0.0", "v1.9.0", "v1.2.0")) == "v1.10.0"
    assert next_version(promoted("v1.3.0", "v2.0.1")) == "v2.1.0"


# ------------------------------------------------------------------------ rollback
def test_rollback_walks_back_one_production_version_per_call(tmp_path):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0", "v1.1.0", "v1.2.0"), path)
    entries = copy.deepcopy(load_registry(path)["versions"])

    reg, restored, replaced = rollback(path, change="incident 1", at="2026-02-01T00:00:00Z")
    assert (reg["production"], replaced) == ("v1.1.0", "v1.2.0")
    assert restored == entries[1]
    reg, restored, _ = rollback(path, change="incident 2")
    assert reg["production"] == "v1.0.0" and restored == entries[0]

    after = load_registry(path)
    assert after["versions"] == entries  # entries are never modified
    assert after["history"][-2:][0] == {
        "action": "rollback",
        "version": "v1.1.0",
        "previous": "v1.2.0",
        "at": "2026-02-01T00:00:00Z",
        "change": "incident 1",
    }
    before = path.read_bytes()
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(path)
    assert path.read_bytes() == before


def test_rollback_skips_versions_already_rolled_back_from(tmp_path):
    """v1 → v2, back to v1, then v3: rolling back from v3 returns to v1, not to the bad v2."""
    path = tmp_path / "registry.yaml"
    reg = promoted("v1.0.0", "v1.1.0")
    record(reg, "rollback", "v1.0.0", "v1.1.0 broke", "2026-01-03T00:00:00Z")
    reg["versions"].append(entry(4, "v1.2.0"))
    record(reg, "promote", "v1.2.0", "PR #4", "2026-01-04T00:00:00Z")
    save_registry(reg, path)
    assert rollback(path)[0]["production"] == "v1.0.0"


def test_rollback_to_an_explicit_version_and_forward_again(tmp_path):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0", "v1.1.0", "v1.2.0"), path)
    assert rollback(path, to="v1.0.0")[0]["production"] == "v1.0.0"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(path)
    assert rollback(path, to="v1.2.0")[0]["production"] == "v1.2.0"  # roll forward
    assert rollback(path)[0]["production"] == "v1.0.0"


@pytest.mark.parametrize(
    ("versions", "args", "culprit"),
    [
        ((), [], "nothing is in production"),
        (("v1.0.0",), [], "nothing to roll back to"),
        (("v1.0.0", "v1.1.0"), ["--to", "v3.0.0"], "unknown version 'v3.0.0'"),
        (("v1.0.0", "v1.1.0"), ["--to", "v1.1.0"], "already production"),
    ],
)
def test_rollback_refusals_leave_the_registry_untouched(tmp_path, versions, args, culprit):
    path = tmp_path / "registry.yaml"
    save_registry(promoted(*versions), path)
    before = path.read_bytes()
    proc = cli("rollback", "--registry", str(path), *args, cwd=tmp_path)
    assert_one_line_error(proc, culprit)
    assert path.read_bytes() == before


def test_rollback_cli_writes_the_pull_request_body(tmp_path):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0", "v1.1.0"), path)
    body = tmp_path / "rollback.md"
    cli(
        "rollback",
        "--registry",
        str(path),
        "--change",
        "incident 9",
        "--body-out",
        str(body),
        cwd=tmp_path,
        check=True,
    )
    assert load_registry(path)["history"][-1]["change"] == "incident 9"
    assert "v1.1.0 → **v1.0.0**" in body.read_text()


# ----------------------------------------------------------------------- atomicity
def test_a_failed_replace_leaves_the_old_registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0"), path)
    before = path.read_bytes()

    def crash(*_):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_registry(promoted("v1.0.0", "v1.1.0"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["registry.yaml"]  # no temp file left


KILLED_WRITER = """
import os, pathlib, signal, sys
from closedloop.registry.registry import empty_registry, record, save_registry
from tests.test_registry import entry
reg = empty_registry()
for i in range(1, 1001):  # a large registry, about 0.5 MB
    reg["versions"].append(entry(i, f"v1.{i}.0"))
record(reg, "promote", "v1.1000.0", "big", "2026-01-01T00:00:00Z")
if sys.argv[2] == "mid-write":
    def half_then_die(self, text, **kw):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    pathlib.Path.write_text = half_then_die
else:  # before-rename: the new file is complete and synced, but not yet in place
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
save_registry(reg, sys.argv[1])
"""


@pytest.mark.parametrize("moment", ["mid-write", "before-rename"])
def test_a_killed_writer_leaves_the_old_registry_whole(tmp_path, moment):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0"), path)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), moment],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    assert path.read_bytes() == before
    assert load_registry(path)["production"] == "v1.0.0"


# ------------------------------------------------------------------------ champion
def test_champion_without_production_writes_present_false(tmp_path):
    save_registry(empty_registry(), tmp_path / REG)
    proc = cli("champion", cwd=tmp_path, check=True)
    assert "no production model" in proc.stdout
    assert json.loads((tmp_path / "models/champion/entry.json").read_text()) == {"present": False}


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
        "checks": [
            {
                "name": "floor_accuracy",
                "passed": True,
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


@pytest.mark.slow
@pytest.mark.parametrize("case", ["fail", "inconclusive", "other model", "dvc.lock uncommitted"])
def test_promote_refusals_leave_the_registry_untouched(project, case):
    gate = (project / "reports/gate.json").read_bytes()
    lock = (project / "dvc.lock").read_bytes()
    before = (project / REG).read_bytes()
    try:
        if case in ("fail", "inconclusive"):
            write_gate(project, case)
            culprit = f"verdict is '{case}'"
        elif case == "other model":
            write_gate(project, model_hash="0" * 64)
            culprit = "judged model 000000000000"
        else:  # a retrained candidate whose dvc.lock is not committed yet
            md5 = yaml.safe_load(lock)["stages"]["train"]["outs"][0]["md5"]
            (project / "dvc.lock").write_text(lock.decode().replace(md5, "f" * 32 + ".dir"))
            culprit = "commit dvc.lock first"
        assert_one_line_error(cli("promote", cwd=project), culprit)
        assert (project / REG).read_bytes() == before
    finally:
        (project / "reports/gate.json").write_bytes(gate)
        (project / "dvc.lock").write_bytes(lock)


@pytest.fixture(scope="module")
def history(project) -> dict:
    """v1 promoted and its PR merged; then a retrain (another lr) promoted as the next version."""
    hash1 = sha256_file(project / WEIGHTS)
    card1 = json.loads((project / "models/candidate/card.json").read_text())
    _, v1, _ = promote(project, change="PR #1", at="2026-01-01T00:00:00Z")
    head1 = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    commit(project, "promote v1 (the merged promotion PR)")

    mlp = project / "conf/model/mlp.yaml"
    retuned = re.sub(r"^lr: \S+", "lr: 0.0123", mlp.read_text(), count=1, flags=re.M)
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_resolving_without_the_cache_or_a_remote_is_a_one_line_error(project, history, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    dest = tmp_path / "model"
    with pytest.raises(RegistryError, match="cannot fetch its model through DVC") as e:
        resolve_model(history["v1"], dest, clone)
    assert "\n" not in str(e.value)
    assert not dest.exists()
