"""The repository itself: lint-clean code, hardened workflows, and the files the contract names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed: run `make install`"
    return path


def test_contract_files_exist():
    for rel in [
        "conf/config.yaml",
        "dvc.yaml",
        "data.dvc",
        "params.yaml",
        "Makefile",
        "README.md",
        ".ci/run",
        ".pre-commit-config.yaml",
        ".github/workflows/ci.yml",
        "pyproject.toml",
        "schemas/gate.schema.json",
        "templates/README.md",
    ]:
        assert (ROOT / rel).is_file(), rel
    for group in ("dataset", "model", "trainer", "metrics", "experiment"):
        assert list((ROOT / "conf" / group).glob("*.yaml")), group
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        assert (ROOT / "pipelines" / f"{stage}.py").is_file(), f"stage {stage} has no module"
        assert stages[stage]["cmd"] == f"python -m pipelines.{stage}"


def test_make_targets_and_ci_entry_point():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("repro", "test", "bench", "help"):
        assert re.search(rf"^{target}:.*## ", makefile, re.M), (
            f"make {target} missing or undocumented"
        )
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "make repro" in (ROOT / "README.md").read_text()


def test_stages_declare_only_keys_that_exist():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name} reads params key {key!r} that params.yaml lacks"
                node = node[part]


def test_a_user_package_beside_the_library_is_on_the_path_everywhere(tmp_path):
    """The editable install (make install / make repro) puts this checkout's src/ on the path
    of every process of the venv, so a package in src/ beside closedloop imports in every
    stage, the server and the command line, from any directory."""
    proc = run(
        [sys.executable, "-c", "import sys; print(chr(10).join(sys.path))"],
        tmp_path,
        extra_env={"PYTHONPATH": ""},
    )
    assert str(ROOT / "src") in proc.stdout.splitlines(), proc.stdout


def test_ruff_is_clean():
    proc = subprocess.run([tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_github_schema(workflow):
    run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        ROOT,
    )


def test_zizmor_finds_nothing_medium_or_worse():
    """The auditor persona: every audit, including the pedantic ones, at medium or above."""
    proc = run(
        [
            tool("zizmor"),
            "--offline",
            "--persona=auditor",
            "--min-severity",
            "medium",
            *map(str, WORKFLOWS),
        ],
        ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_hardening(workflow):
    text = workflow.read_text()
    doc = yaml.safe_load(text)
    assert "permissions" in doc, "least-privilege permissions must be explicit"
    assert "pull_request_target" not in text
    assert "concurrency" in doc
    for job in doc["jobs"].values():
        assert "timeout-minutes" in job
        for step in job.get("steps", []):
            if "uses" in step and not step["uses"].startswith("./"):
                assert re.search(r"@[0-9a-f]{40}$", step["uses"]), (
                    f"{step['uses']} is not pinned to a commit"
                )


# What the auditor persona may still say about the online workflows, and why it is accepted:
# secrets-outside-env: the store URL and DVC credentials are repository secrets, as in
# retrain.yml (an environment per job is a setup choice left to the user); superfluous-actions:
# create-pull-request is the project's one way of opening PRs (retrain.yml uses it too).
AUDITOR_ACCEPTED = {"secrets-outside-env", "superfluous-actions"}


@pytest.mark.parametrize("name", ["rollout.yml", "monitor.yml"])
def test_online_workflows_pass_zizmor_auditor_persona(name):
    proc = run(
        [
            tool("zizmor"),
            "--offline",
            "--persona=auditor",
            "--format=json",
            str(ROOT / ".github/workflows" / name),
        ],
        ROOT,
        check=False,
    )
    import json

    findings = {f["ident"] for f in json.loads(proc.stdout or "[]")}
    assert findings <= AUDITOR_ACCEPTED, findings - AUDITOR_ACCEPTED


@pytest.mark.parametrize("name", ["rollout.yml", "monitor.yml"])
def test_online_workflows_pass_no_input_or_secret_into_a_shell_line(name):
    doc = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
    for job in doc["jobs"].values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), (
                f"{name}: {step.get('name')} expands into the shell"
            )
            assert "${{" not in step.get("with", {}).get("script", ""), (
                f"{name}: expression in a script"
            )


def test_the_pre_commit_fixers_leave_the_loops_outputs_alone():
    """A fixer that trims a stage's output (matplotlib's SVG lines end in a space) makes the
    committed bytes ones that `dvc repro` never writes: a fresh clone is dirty at once."""
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    exclude = re.compile(config.get("exclude", "^$"))
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    tracked = set(run(["git", "ls-files"], ROOT).stdout.split())
    outs = {o["path"] for s in lock["stages"].values() for o in s.get("outs", [])}
    committed = sorted(p for p in tracked if any(p == o or p.startswith(f"{o}/") for o in outs))
    assert "reports/benchmark.html" in committed
    assert [p for p in [*committed, "dvc.lock"] if not exclude.search(p)] == []
