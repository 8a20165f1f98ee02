"""`closedloop rollout decide --apply`: write the next step into conf/rollout/<name>.yaml.

Only the top-level ``mode`` and ``share`` lines change, in place, each keeping its comment,
so the rollout PR's diff is one or two lines a reviewer can read (a YAML round trip would
re-indent comments elsewhere). The edited text is parsed back and must differ from the old in
exactly those keys. A ramp sets the next share (from shadow mode: ``mode: canary`` and the
first share); a rollback sets ``mode: "off"``. Hold, complete and no rollout change nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from closedloop.errors import ConfigError
from closedloop.io import write_text
from closedloop.paths import ROLLOUT_DIR
from closedloop.rollout.decide import RolloutReport


def changes(report: RolloutReport) -> dict:
    """The keys the decision changes (empty: leave the file alone)."""
    if report.action == "ramp":
        return {"mode": report.next_mode, "share": report.next_share}
    if report.action == "rollback":
        return {"mode": "off"}
    return {}


def _scalar(value) -> str:
    # "off" in double quotes: YAML 1.1 readers (PyYAML, OmegaConf) take a bare off for false
    return (
        f'"{value}"' if value == "off" else f"{value:g}" if isinstance(value, float) else str(value)
    )


def edit(text: str, edits: dict, where: Path) -> str:
    """``text`` with each top-level ``key: value`` of ``edits`` replaced, comments kept."""
    old = yaml.safe_load(text) or {}
    for key, value in edits.items():
        line = re.compile(rf"^{key}:[ \t]*(?P<value>[^#\n]*?)(?P<rest>[ \t]*(#.*)?)$", re.M)
        if len(line.findall(text)) != 1:
            raise ConfigError(f"{where}: needs exactly one top-level '{key}:' line to change")
        text = line.sub(lambda m, k=key, v=value: f"{k}: {_scalar(v)}{m['rest']}", text)
    new = yaml.safe_load(text)
    expected = {**old, **edits}
    if new != expected:
        raise ConfigError(f"{where}: editing {sorted(edits)} changed other keys; edit it by hand")
    return text


def apply(report: RolloutReport, name: str, rollout_dir: Path = ROLLOUT_DIR) -> Path | None:
    """Edit conf/rollout/``name``.yaml for the decision; the file, or None when unchanged."""
    edits = changes(report)
    if not edits:
        return None
    path = Path(rollout_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (rollout.name is {name!r})")
    text = path.read_text(encoding="utf-8")
    current = yaml.safe_load(text) or {}
    edits = {
        k: v
        for k, v in edits.items()
        if current.get(k) != v and not (k == "mode" and v == "off" and current.get(k) is False)
    }
    if not edits:
        return None
    write_text(path, edit(text, edits, path))
    return path


def recompose(cwd: Path | str = ".") -> None:
    """`dvc repro compose`: params.yaml and dvc.lock follow the edited conf/.

    The stage's command says `python`: this interpreter's directory goes first on PATH, as
    the Makefile does, so a workflow calling .venv/bin/closedloop composes with the project's
    Python, not the runner's.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "-q", "compose"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise ConfigError(f"`dvc repro compose` failed: {lines[-1]}")
