"""The pull-request flow, proven locally: the same make targets the workflows run, in a
throwaway clone whose `origin` is a bare repository standing in for GitHub.

retrain.yml → a branch carrying the new data.dvc, dvc.lock and report;
promote.yml → a branch editing only models/registry.yaml, refused unless the gate passed for
this exact model; rollback.yml → the previous production entry, restored exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, make_project, run

VENV = Path(sys.executable).parent.parent
WORKFLOWS = ROOT / ".github/workflows"


def make(project: Path, target: str, *args: str, check: bool = True):
    """A make target with this test run's virtualenv (what `make install` made in CI).

    `-o STAMP` tells make the install is done: the copy's pyproject.toml is newer than the
    venv's stamp, and reinstalling would point the editable install at the throwaway copy.
    """
    stamp = VENV / ".closedloop-installed"
    return run(
        ["make", "--no-print-directory", "-o", str(stamp), target, f"VENV={VENV}", *args],
        project,
        check=check,
    )


def add_paths(workflow: str) -> list[str]:
    """The paths a workflow's create-pull-request step commits: the test follows the YAML."""
    doc = yaml.safe_load((WORKFLOWS / workflow).read_text())
    for job in doc["jobs"].values():
        for step in job["steps"]:
            if "create-pull-request" in step.get("uses", ""):
                return step["with"]["add-paths"].split()
    raise AssertionError(f"{workflow} opens no pull request")


def open_pr(project: Path, branch: str, paths: list[str], message: str) -> list[str]:
    """What peter-evans/create-pull-request does: commit `paths` on a branch, push it."""
    run(["git", "checkout", "-q", "-B", branch], project)
    run(["git", "add", "--", *[p for p in paths if (project / p).exists()]], project)
    run(["git", "commit", "-qm", message], project)
    run(["git", "push", "-q", "-f", "origin", branch], project)
    changed = run(["git", "diff", "--name-only", "origin/main", f"origin/{branch}"], project).stdout
    run(["git", "checkout", "-q", "main"], project)
    return changed.split()


def merge(project: Path, branch: str) -> None:
    """A reviewer approves and merges: main moves to the branch."""
    run(["git", "merge", "-q", "--ff-only", branch], project)
    run(["git", "push", "-q", "origin", "main"], project)


def fill_store(url: str, n: int) -> None:
    """Production traffic for the first ``n`` days of 2014, every prediction later corrected
    by its user."""
    from vega_datasets import local_data

    from closedloop.capture.store import FeedbackRecord, FeedbackStore, PredictionRecord

    days = local_data.seattle_weather()
    days = days[(days.date >= "2014-01-01") & (days.date <= "2014-12-31")].head(n)
    store = FeedbackStore(url, batch_size=128, flush_interval_ms=10, personal={}, hash_key=None)
    now = dt.datetime.now(dt.timezone.utc)
    for i, row in enumerate(days.itertuples()):
        features = {
            f: float(getattr(row, f)) for f in ("precipitation", "temp_max", "temp_min", "wind")
        }
        store.log_prediction(
            PredictionRecord(
                request_id=f"req-{i}",
                ts=now,
                model_version="v1.0.0",
                features=features,
                prediction="sun",
                probabilities={"sun": 1.0},
                latency_ms=1.0,
                event_time=row.date.date().isoformat(),
            )
        )
        store.log_feedback(
            FeedbackRecord(
                request_id=f"req-{i}",
                ts=now,
                label=row.weather,
                action="accept" if row.weather == "sun" else "correct",
                source="app",
            )
        )
    store.flush()
    store.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A project with a bare origin, v1 trained, promoted through the PR flow and merged."""
    base = tmp_path_factory.mktemp("gitops")
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    project = make_project(base / "work", max_epochs=40)  # v1 must pass its floors
    # The promotion flow needs a retrain that passes its gate; on dry-summer feedback no model
    # beats "always sun" by a clear margin, so this project gates without beat_baseline
    # (null disables it, as conf/gates/ documents); every other check is judged as usual.
    gates = project / "conf/gates/seattle_weather.yaml"
    config = yaml.safe_load(gates.read_text())
    assert config["beat_baseline"] is not None
    gates.write_text(yaml.safe_dump({**config, "beat_baseline": None}, sort_keys=False))
    run(["git", "remote", "add", "origin", str(origin)], project)
    make(project, "repro")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "v1 trained"], project)
    run(["git", "push", "-q", "origin", "main"], project)
    make(project, "promote", "CHANGE=PR #1")
    changed = open_pr(project, "closedloop/promote", add_paths("promote.yml"), "Promote v1")
    assert changed == ["models/registry.yaml"]
    merge(project, "closedloop/promote")
    make(project, "repro")  # the champion stage now resolves v1
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "champion v1", "--allow-empty"], project)
    run(["git", "push", "-q", "origin", "main"], project)
    return project


def registry(project: Path) -> dict:
    return yaml.safe_load((project / "models/registry.yaml").read_text())


def test_retrain_branch_carries_data_lock_and_report(repo, tmp_path):
    store = f"sqlite:///{tmp_path / 'feedback.db'}"
    # January to early September: the newest 120 days (the production window) are the dry
    # summer; on all of 2014 (autumn's fog) the retrain fails the accuracy floor, and the
    # promotion below needs a candidate that passed its gate.
    fill_store(store, n=250)
    make(repo, "export", f"CLOSEDLOOP_STORE_URL={store}")
    make(repo, "repro")
    changed = open_pr(repo, "closedloop/retrain", add_paths("retrain.yml"), "Retrain")
    assert {"data.dvc", "dvc.lock", "reports/benchmark.md", "reports/gate.json"} <= set(changed)
    assert set(changed) <= set(add_paths("retrain.yml"))
    body = (repo / "reports/benchmark.md").read_text()
    assert "champion `v1.0.0`" in body and "### Drift" in body
    snapshot = json.loads((repo / "artifacts/snapshot/schema.json").read_text())
    assert snapshot["feedback"]["labelled_rows"] == 250
    merge(repo, "closedloop/retrain")


def test_promotion_is_refused_unless_the_gate_passed_for_this_model(repo):
    before = (repo / "models/registry.yaml").read_bytes()
    gate_path = repo / "reports/gate.json"
    gate = json.loads(gate_path.read_text())
    try:
        failed = {**gate["checks"][0], "passed": False, "status": "fail"}
        gate_path.write_text(json.dumps({**gate, "verdict": "fail", "checks": [failed]}))
        proc = make(repo, "promote", "CHANGE=PR #2", check=False)
        assert proc.returncode != 0 and "fail" in proc.stderr
        # A consistent passing verdict, but for another model (whatever the retrain's was).
        passed = {**gate["checks"][0], "passed": True, "status": "pass"}
        other = {**gate, "verdict": "pass", "checks": [passed], "model_hash": "0" * 64}
        gate_path.write_text(json.dumps(other))
        proc = make(repo, "promote", "CHANGE=PR #2", check=False)
        assert proc.returncode != 0 and "judged model 000000000000" in proc.stderr
        assert (repo / "models/registry.yaml").read_bytes() == before
    finally:
        gate_path.write_text(json.dumps(gate, indent=2, sort_keys=True) + "\n")
        run(["git", "checkout", "--", "reports/gate.json"], repo)


def test_promotion_branch_edits_only_the_registry_and_rollback_restores_exactly(repo):
    v1 = registry(repo)["versions"][0]
    gate = json.loads((repo / "reports/gate.json").read_text())
    assert gate["verdict"] == "pass", [c for c in gate["checks"] if c["status"] != "pass"]
    make(repo, "promote", "CHANGE=PR #3")
    changed = open_pr(repo, "closedloop/promote", add_paths("promote.yml"), "Promote v2")
    assert changed == ["models/registry.yaml"]
    merge(repo, "closedloop/promote")
    assert registry(repo)["production"] == "v1.1.0"

    make(repo, "rollback", "CHANGE=incident 1")
    changed = open_pr(repo, "closedloop/rollback", add_paths("rollback.yml"), "Roll back")
    assert changed == ["models/registry.yaml"]
    merge(repo, "closedloop/rollback")
    after = registry(repo)
    assert after["production"] == "v1.0.0"
    assert after["versions"][0] == v1  # the entry comes back exactly as it was
    assert after["history"][-1]["action"] == "rollback"
    make(repo, "deploy-verify")
