"""A no-op `dvc repro` against `dvc status` on the same up-to-date repository.

Target: ratio <= 1.5. A no-op repro should cost about what checking status costs: it must
not rerun, rehash more than status does, or recompose the config. Runs on a fresh clone of
this repository's committed state, timed interleaved, median of repeats.

    python benchmarks/bench_dvc_noop.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import result, step

TARGET = 1.5


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        step("cloning this repository and running the whole loop once (dvc repro)")
        subprocess.run(["git", "clone", "-q", str(root), str(repo)], check=True)
        (repo / "data").mkdir(exist_ok=True)
        subprocess.run(["dvc", "repro"], cwd=repo, env=env, check=True, capture_output=True)
        repro, status = [], []
        for i in range(args.repeats):
            step(f"repeat {i + 1}/{args.repeats}: a no-op dvc repro, then dvc status")
            repro.append(timed(["dvc", "repro"], repo, env))
            status.append(timed(["dvc", "status"], repo, env))
        out = subprocess.run(
            ["dvc", "repro"], cwd=repo, env=env, check=True, capture_output=True, text=True
        )
        assert "Running stage" not in out.stdout, "the repository was not up to date"
    ratio = statistics.median(r / s for r, s in zip(repro, status, strict=False))
    result(
        "dvc: no-op repro vs status",
        f"{statistics.median(repro):.2f}s",
        f"{statistics.median(status):.2f}s",
        ratio,
        TARGET,
    )


if __name__ == "__main__":
    main()
