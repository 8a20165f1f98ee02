"""`make install` leaves the venv byte-compiled.

Every stage is a fresh process that imports torch and Lightning. Where PYTHONDONTWRITEBYTECODE
is set, as in many containers, Python writes no .pyc and would compile those packages from
source in each process (Lightning 7.2 s instead of 3.3 s); the suite took 1.5 times as long.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# The packages every training, evaluation or drift stage imports, and the largest parts of
# what they pull in.
HEAVY = ("torch", "lightning", "torchmetrics", "evidently", "sympy", "scipy", "pandas")


def uncompiled(package: str) -> list[Path]:
    """The package's modules without a .pyc that this Python can compile."""
    root = Path(importlib.util.find_spec(package).origin).parent
    missing = []
    for source in root.rglob("*.py"):
        if Path(importlib.util.cache_from_source(str(source))).is_file():
            continue
        try:
            compile(source.read_bytes(), str(source), "exec")
        except SyntaxError:
            continue  # another Python's syntax (torch ships one 3.12 file): pip skips it too
        missing.append(source)
    return missing


@pytest.mark.parametrize("package", HEAVY)
def test_the_venvs_heavy_packages_are_byte_compiled(package):
    missing = uncompiled(package)
    if missing and not os.environ.get("CI"):
        pytest.skip(
            f"{len(missing)} modules of {package} have no .pyc: this venv predates the "
            "byte-compile step (rm -rf .venv && make install)"
        )
    if missing:
        pytest.fail(f"{len(missing)} modules of {package} have no .pyc, e.g. {missing[0]}")
