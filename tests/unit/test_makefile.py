"""The Makefile: values people and workflows pass never become shell or make code.

rollback.yml used to run `make rollback CHANGE="... $REASON"`: a reason such as
`oops"; touch /tmp/x; echo "` ran the command, and make expanded `$(shell ...)` in it too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from closedloop.registry.registry import load_registry, save_registry
from tests.conftest import ROOT, run
from tests.fixtures import promoted

VENV = Path(sys.executable).parent.parent
HOSTILE = [
    'oops"; touch pwned-quote; echo "',
    "oops'; touch pwned-single; echo '",
    "it is $(shell touch pwned-make) fine",
    "`touch pwned-backtick` $$(touch pwned-subshell) $(touch pwned-dollar)",
]


def make(cwd: Path, target: str, *args: str, check: bool = True, env: dict | None = None):
    """A target of this repository's Makefile run in ``cwd``; -o: never reinstall the venv."""
    stamp = VENV / ".closedloop-installed"
    cmd = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-o", str(stamp)]
    return run([*cmd, target, f"VENV={VENV}", *args], cwd, check=check, extra_env=env)


@pytest.fixture
def project(tmp_path) -> Path:
    save_registry(promoted("v1.0.0", "v1.1.0"), tmp_path / "models/registry.yaml")
    return tmp_path


def pwned(where: Path) -> list[str]:
    return sorted(p.name for p in where.glob("pwned-*"))


@pytest.mark.parametrize("reason", HOSTILE)
def test_a_hostile_change_reaches_the_registry_as_text_and_runs_nothing(project, reason):
    make(project, "rollback", f"CHANGE={reason}")
    assert pwned(project) == []
    assert load_registry(project / "models/registry.yaml")["history"][-1]["change"] == reason


@pytest.mark.parametrize("reason", HOSTILE)
def test_the_workflows_environment_variables_run_nothing_either(project, reason):
    """rollback.yml sets CLOSEDLOOP_CHANGE and CLOSEDLOOP_ROLLBACK_TO and runs `make rollback`."""
    make(project, "rollback", env={"CLOSEDLOOP_CHANGE": f"rollback by @someone - {reason}"})
    assert pwned(project) == []
    history = load_registry(project / "models/registry.yaml")["history"]
    assert history[-1]["change"] == f"rollback by @someone - {reason}"
    proc = make(project, "rollback", check=False, env={"CLOSEDLOOP_ROLLBACK_TO": reason})
    assert proc.returncode != 0 and f"unknown version {reason!r}" in proc.stderr
    assert pwned(project) == []


@pytest.mark.parametrize("reason", HOSTILE)
def test_a_hostile_version_is_refused_by_name_and_runs_nothing(project, reason):
    before = (project / "models/registry.yaml").read_bytes()
    proc = make(project, "rollback", f"TO={reason}", check=False)
    assert proc.returncode != 0 and f"unknown version {reason!r}" in proc.stderr
    assert pwned(project) == [] and (project / "models/registry.yaml").read_bytes() == before


@pytest.mark.parametrize("target", ["promote", "rollback", "serve", "export", "repro"])
@pytest.mark.parametrize("variable", ["CHANGE", "TO", "HOST", "PORT"])
def test_no_recipe_pastes_a_passed_value(project, target, variable):
    """`make -n` prints the shell lines a target would run: a passed value is never in them."""
    lines = make(project, target, f"{variable}=MARKER-9f1c", "-n").stdout
    assert "MARKER-9f1c" not in lines, lines
