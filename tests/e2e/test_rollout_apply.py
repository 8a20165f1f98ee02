"""`closedloop rollout decide --apply` in a scratch copy of this repository: the conf/rollout/
edit, then `dvc repro compose`, leave params.yaml and dvc.lock in step with conf/, even when
the shell's `python` is not the project's (as when a workflow calls .venv/bin/closedloop)."""

from __future__ import annotations

import os
import sys

import yaml

from tests.conftest import make_project, run
from tests.fixtures import rollout_traffic


def test_apply_then_recompose_with_a_foreign_python_on_path(tmp_path):
    root = make_project(tmp_path / "project")
    config = root / "conf/config.yaml"
    config.write_text(config.read_text().replace('rollout: "off"', "rollout: canary"))
    run([sys.executable, "-m", "dvc", "repro", "-q", "compose"], root)
    run(["git", "commit", "-qam", "a canary at 5%"], root)
    records = tmp_path / "records.parquet"
    rollout_traffic(1, share=0.05, accuracy=(0.80, 0.90), n=120_000).to_parquet(records)
    # PATH without the virtual environment: `python` there cannot import closedloop
    bare = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(sys.prefix))
    )
    proc = run(
        [sys.executable, "-m", "closedloop", "rollout", "decide", "--apply", "--records", str(records)],
        root, extra_env={"PATH": bare}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "conf/rollout/canary.yaml updated" in proc.stdout
    assert yaml.safe_load((root / "params.yaml").read_text())["rollout"]["share"] == 0.25
    status = run([sys.executable, "-m", "dvc", "status", "compose"], root)
    assert "up to date" in status.stdout, status.stdout
    changed = run(["git", "status", "--porcelain"], root).stdout.splitlines()
    assert sorted(line[3:] for line in changed) == [
        "conf/rollout/canary.yaml",
        "dvc.lock",
        "params.yaml",
    ]
