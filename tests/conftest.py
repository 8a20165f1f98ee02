"""Shared fixtures. Tests force the CPU and tiny settings, and use data that ships offline."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch

from closedloop.artefacts.champion import write_no_champion
from closedloop.config import compose, dump
from closedloop.data.collect import collect
from closedloop.evaluation.drift import drift
from closedloop.numerics import pin_from_params
from closedloop.paths import CANDIDATE_DIR, CHAMPION_ENTRY, SNAPSHOT_DIR
from closedloop.training.train import train

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Tests that train in this process do it on the loop's numerical path, as the stages do:
# torch is imported above but has computed nothing yet (closedloop.numerics).
pin_from_params(ROOT / "params.yaml")


# The longest test files (minutes each, measured on 2 cores), longest first. `make test`
# hands whole files to its workers in collection order, so these start first and the short
# ones fill in around them, rather than one long file starting last on its own.
LONGEST_FIRST = [
    "test_newcomer.py",
    "test_pipeline.py",
    "test_task_examples.py",
    "test_own_table.py",
    "test_load.py",
    "test_gitops.py",
    "test_own_code.py",
    "test_reproducible.py",
]


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e is `slow`; `gpu` tests skip cleanly without CUDA. The
    longest files come first (a stable sort: each file's own order is kept)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.fspath).name, len(rank)))
    e2e = ROOT / "tests" / "e2e"
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if Path(item.fspath).is_relative_to(e2e):
            item.add_marker(pytest.mark.slow)
        if skip is not None and "gpu" in item.keywords:
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


# ------------------------------------------------------------ command lines
REG = Path("models/registry.yaml")
WEIGHTS = Path("models/candidate/model.safetensors")
PY_ENV = {"PYTHONPATH": str(ROOT)}  # pipelines/ from here; it puts src/ first itself


def cli(command: str, *args: str, cwd: Path, check: bool = False):
    """`closedloop COMMAND`, or the DVC stage `python -m pipelines.champion`."""
    module = ["pipelines.champion"] if command == "champion" else ["closedloop", command]
    return run([sys.executable, "-m", *module, *args], cwd, check, PY_ENV)


def assert_one_line_error(proc, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def tiny_params():
    """The default config, composed, on the CPU with two epochs."""
    from closedloop.config import compose

    return compose(["trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")


@pytest.fixture
def sun_eval_frame():
    """Real labels of the Seattle 2014 window with a predictor that always says 'sun'."""
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    df = df[(df.date >= "2014-01-01") & (df.date <= "2014-12-31")].reset_index(drop=True)
    return pd.DataFrame(
        {
            "row": range(len(df)),
            "date": df.date.dt.strftime("%Y-%m-%d"),
            "actual": df.weather,
            "predicted": "sun",
            "confidence": [0.55 + 0.4 * (i % 2) for i in range(len(df))],
            "slice_season": df.date.dt.month.map(
                lambda m: "winter" if m in (12, 1, 2) else "other"
            ),
        }
    )


# ------------------------------------------------------------ drift
@pytest.fixture(scope="session")
def drift_project(tmp_path_factory):
    """The real loop up to train in a scratch directory, with its params.yaml: seattle_weather
    on the CPU, at most 15 epochs (early stopping ships epoch 2, the best val loss; its
    predictions shift: p = 0.013)."""
    root = tmp_path_factory.mktemp("project")
    params = compose(["trainer=cpu", "trainer.max_epochs=15"], conf_dir=ROOT / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        collect(params, SNAPSHOT_DIR, root / "data")
        train(params, SNAPSHOT_DIR, CANDIDATE_DIR)
    write_no_champion(root / CHAMPION_ENTRY)  # what the champion stage writes before v1
    (root / "params.yaml").write_text(dump(params))
    return root, params


def measure_drift_on(project, out_dir, params=None, champion_entry=None, snapshot=None) -> dict:
    """Run the stage's function on the project's inputs, writing into ``out_dir``; return
    drift.json's content. Without ``champion_entry``, there is no champion yet."""
    root, default = project
    return drift(
        params or default,
        snapshot=snapshot or root / SNAPSHOT_DIR,
        model_dir=root / CANDIDATE_DIR,
        champion_entry=champion_entry or root / CHAMPION_ENTRY,
        html=out_dir / "drift.html",
        out=out_dir / "drift.json",
    ).model_dump(mode="json")


def with_drift(params, **changes):
    return {**params, "drift": {**params["drift"], **changes}}


@pytest.fixture(scope="session")
def drift_seattle(drift_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("seattle")
    return measure_drift_on(drift_project, out), out


# ------------------------------------------------------------ feedback stores
POSTGRES_ENV = "CLOSEDLOOP_TEST_POSTGRES_URL"  # .ci/run starts a server and sets it


@contextlib.contextmanager
def postgres_database():
    """A new, empty database on the PostgreSQL server $CLOSEDLOOP_TEST_POSTGRES_URL names
    (dropped afterwards); the test skips, saying why, when no server is given."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"no PostgreSQL server: set ${POSTGRES_ENV} (.ci/run starts one)")
    name = f"closedloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty feedback store: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fb.db'}"
    else:
        with postgres_database() as url:
            yield url


def store_rows(url: str, sql: str) -> list[tuple]:
    """Rows of a statement run against a store (autocommit), whichever database it is."""
    from sqlalchemy import create_engine

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.exec_driver_sql(sql)
            return [tuple(r) for r in result.all()] if result.returns_rows else []
    finally:
        engine.dispose()
