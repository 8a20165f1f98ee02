"""The errors stage and `closedloop errors show`."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from closedloop.cli import cli
from closedloop.paths import ERRORS_MD, ERRORS_TABLE
from pipelines.errors import main


def test_stage_and_cli(sun_eval_frame, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/eval").mkdir(parents=True)
    sun_eval_frame.to_csv(tmp_path / "reports/eval/production.csv", index=False)
    main()
    assert pd.read_parquet(ERRORS_TABLE).shape[0] == 154
    assert ERRORS_MD.read_text().startswith("# Error analysis")
    shown = CliRunner().invoke(cli, ["errors", "show", "--type", "rain->sun"])
    assert shown.exit_code == 0 and "3 matching error(s)" in shown.output


def test_errors_md_comes_from_a_users_template(sun_eval_frame, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/eval").mkdir(parents=True)
    sun_eval_frame.to_csv(tmp_path / "reports/eval/production.csv", index=False)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/errors.md.j2").write_text(
        "{{ errors }} of {{ total }}; worst: {{ top[0].failure_type }}\n"
    )
    main()
    assert ERRORS_MD.read_text() == "154 of 365; worst: fog→sun\n"
