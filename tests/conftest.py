"""Shared fixtures. Tests force the CPU and tiny settings, and use data that ships offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def env() -> dict:
    """The environment a stage sees: the venv first on PATH, no GPU surprises."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.pop("DVC_EXP_NAME", None)
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, extra_env: dict | None = None):
    """Run a command; on failure show its output in the assertion."""
    proc = subprocess.run(
        cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def make_project(dest: Path, max_epochs: int = 3) -> Path:
    """A copy of this repository's tracked files in ``dest``, as its own git repo.

    max_epochs is lowered so the DVC tests spend their time on orchestration, not training.
    """
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    trainer = dest / "conf/trainer/default.yaml"
    trainer.write_text(
        "\n".join(
            f"max_epochs: {max_epochs} # lowered by the tests"
            if line.startswith("max_epochs:")
            else line
            for line in trainer.read_text().splitlines()
        )
        + "\n"
    )
    (dest / "data").mkdir(exist_ok=True)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "tests@closedloop.invalid"],
        ["git", "config", "user.name", "closedloop tests"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "project under test"],
    ):
        run(args, dest)
    return dest


@pytest.fixture
def tiny_params():
    """The default config, composed, on the CPU with two epochs."""
    from closedloop.config import compose

    return compose(["trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
