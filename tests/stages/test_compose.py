"""The compose stage: a bad config stops the loop there, in one line, touching nothing."""

from __future__ import annotations

import shutil

from tests.conftest import ROOT, run

CONF = ROOT / "conf"


def test_compose_cli_fails_before_any_work_with_one_line(tmp_path):
    """The compose stage is first in dvc.yaml: a bad config stops the loop there."""
    shutil.copytree(CONF, tmp_path / "conf")
    (tmp_path / "params.yaml").write_text("untouched\n")
    proc = run(
        ["python", "-m", "pipelines.compose", "model.lr=-1"],
        tmp_path,
        check=False,
        extra_env={"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "model.lr" in proc.stderr and "conf/model/mlp.yaml" in proc.stderr
    assert (tmp_path / "params.yaml").read_text() == "untouched\n", (
        "a failed compose must not touch params.yaml"
    )
