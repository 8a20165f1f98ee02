"""The compose stage: a bad config stops the loop there, in one line, touching nothing."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import ROOT, run

CONF = ROOT / "conf"


@pytest.mark.parametrize(
    ("edit", "override", "blamed"),
    [
        (
            ("model/mlp.yaml", "lr: 0.003", "lr: -1"),
            None,
            "conf/model/mlp.yaml: model.optimizer.lr",
        ),
        (None, "model.optimizer.lr=-1", "override 'model.optimizer.lr=-1': model.optimizer.lr"),
        (("model/mlp.yaml", "dropout: 0.1", "dropout: [0.1"), None, "conf/model/mlp.yaml:"),
    ],
)
def test_compose_cli_fails_before_any_work_with_one_line(tmp_path, edit, override, blamed):
    """The compose stage is first in dvc.yaml: a bad config stops the loop there."""
    shutil.copytree(CONF, tmp_path / "conf")
    if edit:
        path = tmp_path / "conf" / edit[0]
        path.write_text(path.read_text().replace(edit[1], edit[2]))
    (tmp_path / "params.yaml").write_text("untouched\n")
    proc = run(
        ["python", "-m", "pipelines.compose", *([override] if override else [])],
        tmp_path,
        check=False,
        extra_env={"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith(f"error: {blamed}"), proc.stderr
    assert (tmp_path / "params.yaml").read_text() == "untouched\n", (
        "a failed compose must not touch params.yaml"
    )
