"""The architecture holds: import-linter's contracts (pyproject.toml) and one exceptions module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def test_import_linter_contracts_are_kept():
    proc = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_exceptions_live_in_one_leaf_module_with_one_base():
    """Every exception class is in closedloop/errors.py and derives from ClosedloopError."""
    found = []
    for path in sorted((ROOT / "src/closedloop").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append((path.relative_to(ROOT).as_posix(), node.name))
    outside = [f for f in found if f[0] != "src/closedloop/errors.py"]
    assert not outside, f"exception classes outside closedloop/errors.py: {outside}"
    errors = (ROOT / "src/closedloop/errors.py").read_text()
    assert "from closedloop" not in errors and "import closedloop" not in errors
