"""`closedloop lock-check`: a benchmark run that did not reproduce the committed dvc.lock says
so in the report and fails its check, so a judged model is always the one the PR records."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, cli, run

LOCK = {
    "schema": "2.0",
    "stages": {
        "train": {
            "cmd": "python -m pipelines.train",
            "deps": [{"path": "artifacts/snapshot", "md5": "a" * 32 + ".dir"}],
            "params": {"params.yaml": {"seed": 42}},
            "outs": [{"path": "models/candidate", "md5": "1" * 32 + ".dir"}],
        }
    },
}
REPORT = "## Benchmark\n\nverdict: pass\n"


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/benchmark.md").write_text(REPORT)
    for args in (["init", "-q"], ["add", "dvc.lock"], ["commit", "-qm", "lock"]):
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], tmp_path)
    return tmp_path


def test_a_reproduced_lock_passes_and_leaves_the_report(repo):
    proc = cli("lock-check", "--report", "reports/benchmark.md", cwd=repo)
    assert proc.returncode == 0 and "reproduced the committed dvc.lock" in proc.stdout
    assert (repo / "reports/benchmark.md").read_text() == REPORT


def test_other_weights_fail_the_check_and_the_report_opens_saying_so(repo):
    lock = (repo / "dvc.lock").read_text()
    (repo / "dvc.lock").write_text(lock.replace("1" * 32, "2" * 32))
    proc = cli("lock-check", "--report", "reports/benchmark.md", cwd=repo)
    assert proc.returncode == 1
    assert "did NOT reproduce the committed dvc.lock" in proc.stderr
    assert "models/candidate: committed md5 111111111111, this run 222222222222" in proc.stderr
    report = (repo / "reports/benchmark.md").read_text()
    assert report.startswith(
        "> [!WARNING]\n> **This run did not reproduce the committed dvc.lock**"
    )
    assert "models/candidate: committed md5 111111111111" in report and report.endswith(REPORT)


def test_a_stage_run_on_uncommitted_inputs_is_named(repo):
    lock = (repo / "dvc.lock").read_text()
    (repo / "dvc.lock").write_text(lock.replace("seed: 42", "seed: 7"))
    proc = cli("lock-check", cwd=repo)
    assert proc.returncode == 1 and "stage train ran on other inputs" in proc.stderr


def test_benchmark_workflow_checks_the_lock_after_repro_and_before_the_verdict():
    steps = yaml.safe_load((ROOT / ".github/workflows/benchmark.yml").read_text())["jobs"]
    runs = [s.get("run", "") for s in steps["benchmark"]["steps"]]
    order = [
        i
        for key in ("make repro", "make lock-check", "closedloop gate check")
        for i, r in enumerate(runs)
        if key in r
    ]
    assert order == sorted(order) and len(order) == 3, runs
