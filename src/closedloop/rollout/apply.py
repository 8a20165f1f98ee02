"""`closedloop rollout decide --apply`: write the next step into conf/rollout/<name>.yaml.

Only ``mode`` and ``share`` change, in place, with every comment kept (ruamel.yaml's round
trip), so the rollout PR's diff is one or two lines a reviewer can read. A ramp sets the next
share (from shadow mode: ``mode: canary`` and the first share); a rollback sets ``mode: off``.
Hold, complete and no rollout change nothing.
"""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

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


def apply(report: RolloutReport, name: str, rollout_dir: Path = ROLLOUT_DIR) -> Path | None:
    """Edit conf/rollout/``name``.yaml for the decision; the file, or None when unchanged."""
    edits = changes(report)
    if not edits:
        return None
    path = Path(rollout_dir) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (rollout.name is {name!r})")
    yaml = YAML()  # round trip: comments, order and quoting stay as written
    yaml.preserve_quotes = True
    yaml.width = 4096
    doc = yaml.load(path.read_text(encoding="utf-8"))
    for key, value in edits.items():
        if key not in doc:
            raise ConfigError(f"{path}: has no '{key}' to change; add `{key}:` to it")
        # "off" in double quotes: YAML 1.1 readers (PyYAML, OmegaConf) take a bare off for false
        doc[key] = DoubleQuotedScalarString(value) if isinstance(value, str) else value
    buf = StringIO()
    yaml.dump(doc, buf)
    write_text(path, buf.getvalue())
    return path


def recompose(cwd: Path | str = ".") -> None:
    """`dvc repro compose`: params.yaml and dvc.lock follow the edited conf/."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "-q", "compose"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise ConfigError(f"`dvc repro compose` failed: {lines[-1]}")
