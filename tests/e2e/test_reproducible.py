"""Same bytes on any x86-64 runner: the CPU's kernel path must not reach the model.

MKL and ATen pick kernels by the CPU (AVX-512 here, AVX2 on an older runner; Intel's or
AMD's). Capping the ISA with MKL_ENABLE_INSTRUCTIONS=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2 mimics
the older runner on this one; QEMU's user-mode emulation of an Intel Haswell (another vendor
and ISA than any CI host, as MKL sees it) is a CPU of another make altogether. `numerics:` in
conf/config.yaml, and models that avoid MKL's vector math, must make them all give the same
weights and metrics, whatever thread count the environment asks for.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, ROOT, make_project, run

VENV = Path(sys.executable).parent.parent

OLDER_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MORE_THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
PY_ENV = {"PYTHONPATH": str(ROOT)}


QEMU = shutil.which("qemu-x86_64")
EMULATED_INTEL = [QEMU, "-cpu", "Haswell"]  # GenuineIntel, AVX2 and FMA, no AVX-512


def stage(project, name: str, extra_env: dict | None = None, under: list | None = None) -> None:
    run(
        [*(under or []), str(VENV / "bin" / "python"), "-m", f"pipelines.{name}"],
        project,
        extra_env={**PY_ENV, **(extra_env or {})},
    )


# Both stages in one fresh process, as `dvc repro` would run them one after the other: under
# the emulator, importing torch and Lightning twice would be most of the test's time.
TRAIN_THEN_EVALUATE = "from pipelines import evaluate, train; train.main(); evaluate.main()"


def trained(project, extra_env: dict, under: list | None = None) -> tuple[str, bytes]:
    """Train and evaluate in a fresh process with ``extra_env`` (``under`` an emulator): the
    weights' sha256 and reports/metrics.json."""
    run(
        [*(under or []), str(VENV / "bin" / "python"), "-c", TRAIN_THEN_EVALUATE],
        project,
        extra_env={**PY_ENV, **extra_env},
    )
    weights = (project / "models/candidate/model.safetensors").read_bytes()
    return hashlib.sha256(weights).hexdigest(), (project / "reports/metrics.json").read_bytes()


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> tuple[Path, tuple[str, bytes]]:
    """A project trained and evaluated with this CPU's default kernels: the weights' sha256
    and metrics every other CPU below must give."""
    project = make_project(tmp_path_factory.mktemp("native") / "project", max_epochs=5)
    for name in ("compose", "collect", "champion"):
        stage(project, name)
    return project, trained(project, {})


def test_default_kernels_and_an_avx2_cap_train_the_same_weights(native):
    project, here = native
    older = trained(project, {**OLDER_CPU, **MORE_THREADS})
    assert older[0] == here[0], "the AVX2-capped run (2 threads asked) trained other weights"
    assert older[1] == here[1], "the AVX2-capped run (2 threads asked) gave other metrics"


def test_an_emulated_intel_cpu_trains_the_same_weights(native):
    """The check that caught AdamW's per-tensor sqrt: MKL's vector math, which ignores
    MKL_CBWR, gave an AMD EPYC and this emulated Intel other last bits (030dc6d4 vs
    47c9b9f6), the ISA caps above did not. CI installs qemu-user (.ci/run)."""
    if QEMU is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-x86_64 is missing: .ci/run installs Debian's qemu-user")
        pytest.skip("qemu-x86_64 is missing (Debian's qemu-user)")
    project, here = native
    intel = trained(project, {}, under=EMULATED_INTEL)
    assert intel[0] == here[0], "the emulated Intel CPU trained other weights"
    assert intel[1] == here[1], "the emulated Intel CPU gave other metrics"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of HEAD after `dvc repro`, run as on a CI runner with an AVX2 CPU."""
    root = tmp_path_factory.mktemp("fresh")
    run(["git", "clone", "-q", str(ROOT), str(root / "clone")], root)
    (root / "clone" / "data").mkdir(exist_ok=True)
    run(["dvc", "repro"], root / "clone", extra_env=OLDER_CPU)
    return root / "clone"


def test_a_fresh_clone_reproduces_the_committed_dvc_lock_on_an_older_cpu(clone):
    """The committed dvc.lock, params.yaml and reports are reproduced byte for byte."""
    status = run(["git", "status", "--porcelain"], clone).stdout
    diff = run(["git", "diff", "--stat"], clone).stdout
    assert status == "", f"dvc repro on a fresh clone changed committed files:\n{status}{diff}"
    assert (
        "reproduced the committed dvc.lock"
        in run([str(BIN / "closedloop"), "lock-check"], clone).stdout
    )


def test_make_clean_removes_only_what_dvc_checkout_restores(clone):
    """The DVC-cached outputs go; git-tracked ones (`cache: false`) stay; checkout restores."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    outs = [o["path"] for s in lock["stages"].values() for o in s.get("outs", [])]
    tracked = set(run(["git", "ls-files"], clone).stdout.split())
    cached = [o for o in outs if o not in tracked]
    assert {"models/candidate", "artifacts/snapshot", "reports/eval"} <= set(cached)
    assert {"reports/train/history.csv", "reports/metrics.json", "reports/gate.json"} <= tracked

    stamp = VENV / ".closedloop-installed"
    run(["make", "-o", str(stamp), "clean", f"VENV={VENV}"], clone)
    assert run(["git", "status", "--porcelain"], clone).stdout == "", "make clean touched git"
    assert [o for o in cached if (clone / o).exists()] == []
    run(["dvc", "checkout"], clone)
    assert all((clone / o).exists() for o in outs)
    assert "up to date" in run(["dvc", "status"], clone).stdout
