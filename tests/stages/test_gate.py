"""The gate stage: reads the reports, writes reports/gate.json, fails in one line on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from closedloop.io import write_json
from pipelines import gate as gate_stage
from tests.conftest import ROOT, assert_one_line_error, cli
from tests.fixtures import (
    CHAMPION,
    DRIFT,
    SCHEMA,
    card,
    gate_reports,
)


def write_inputs(root, comparison, metrics, champion=CHAMPION):
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    write_json(root / "reports/comparison.json", comparison)
    write_json(root / "reports/metrics.json", metrics)
    write_json(root / "reports/drift.json", DRIFT)
    write_json(root / "artifacts/snapshot/schema.json", SCHEMA)
    write_json(root / "models/champion/entry.json", champion)
    write_json(root / "models/candidate/card.json", card())


def test_main_writes_gate_json(tmp_path, monkeypatch, capsys):
    write_inputs(tmp_path, *gate_reports("better"))
    monkeypatch.chdir(tmp_path)
    gate_stage.main()
    out = json.loads((tmp_path / "reports/gate.json").read_text())
    assert set(out) == {"verdict", "model_hash", "champion", "split", "policy", "checks"}
    assert out["verdict"] == "pass" and out["model_hash"] == "b" * 64
    assert out["split"] == "production" and out["champion"]["version"] == "v1.0.0"
    for c in out["checks"]:
        assert {"name", "passed", "status", "value", "threshold", "reason"} <= set(c)
    assert "gate: PASS" in capsys.readouterr().out
    write_json(tmp_path / "models/champion/entry.json", {"present": False})
    gate_stage.main()
    assert json.loads((tmp_path / "reports/gate.json").read_text())["champion"] is None


@pytest.mark.parametrize("comparison", [None, "{not json", "[1, 2]"])
def test_bad_comparison_is_a_one_line_error(tmp_path, comparison):
    write_inputs(tmp_path, {}, gate_reports("better")[1])
    path = tmp_path / "reports/comparison.json"
    if comparison is None:
        path.unlink()
    else:
        path.write_text(comparison)
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.gate"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: reports/comparison.json")
    assert not (tmp_path / "reports/gate.json").exists()


def test_gate_check_exits_by_the_recorded_verdict(tmp_path, monkeypatch):
    """`closedloop gate check`, CI's required check: 0 only on pass; a bad file is one line."""
    write_inputs(tmp_path, *gate_reports("better"))
    monkeypatch.chdir(tmp_path)
    gate_stage.main()
    path = tmp_path / "reports/gate.json"
    passed = json.loads(path.read_text())
    assert cli("gate", "check", cwd=tmp_path).returncode == 0

    failed = {**passed["checks"][0], "passed": False, "status": "fail", "reason": "too low"}
    path.write_text(json.dumps({**passed, "verdict": "fail", "checks": [failed]}))
    proc = cli("gate", "check", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [f"fail: {failed['name']}: too low", "gate verdict: fail"]

    path.write_text(json.dumps({**passed, "verdict": "fail"}))  # a verdict its checks deny
    assert_one_line_error(cli("gate", "check", cwd=tmp_path), "reports/gate.json", "verdict")
