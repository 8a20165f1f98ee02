"""Every command line prints its help and does nothing else.

`python -m pipelines.demo --help` once started the demo, and killing it left an orphaned
`dvc repro` behind. Every `closedloop` command and every stage module is asked for help in an
empty directory: it exits 0, says what it does, and writes nothing.
"""

from __future__ import annotations

import sys

import click
import pytest
from click.testing import CliRunner

from closedloop.cli import cli
from tests.conftest import ROOT, run


def commands(group: click.Group, prefix: tuple = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


STAGES = sorted(p.stem for p in (ROOT / "pipelines").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("command", commands(cli), ids=lambda c: " ".join(c) or "closedloop")
def test_every_closedloop_command_prints_help_and_does_nothing_else(tmp_path, command):
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path) as here:
        result = runner.invoke(cli, [*command, "--help"], prog_name="closedloop")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Usage: closedloop"), result.output
        assert list(__import__("pathlib").Path(here).iterdir()) == []


def test_every_stage_module_prints_help_and_does_nothing_else(tmp_path):
    """All the stage modules, one process: each asked `--help` in an empty directory."""
    script = (
        "import runpy, sys\n"
        f"for name in {STAGES!r}:\n"
        "    sys.argv = [name, '--help']\n"
        "    print('=== ' + name)\n"
        "    try:\n"
        "        runpy.run_module('pipelines.' + name, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as e:\n"  # argparse's --help exits 0
        "        assert e.code in (0, None), (name, e.code)\n"
    )
    proc = run([sys.executable, "-c", script], tmp_path, extra_env={"PYTHONPATH": str(ROOT)})
    chunks = proc.stdout.split("=== ")[1:]
    assert [c.split("\n", 1)[0] for c in chunks] == STAGES
    for chunk in chunks:
        name, text = chunk.split("\n", 1)
        assert f"`{name}`" in text or f"pipelines.{name}" in text, chunk
    assert list(tmp_path.iterdir()) == [], "asking for help wrote files"
