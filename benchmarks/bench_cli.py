"""Cold start of `closedloop rollback --help` against `python -c pass` in the same venv.

Target: ratio <= 10. The command line imports what a command needs only when it runs, so its
help costs Python's start plus click, not pandas or torch (an eager `import pandas` alone
would take it far past the target). Measured as hyperfine does: a warm-up run of each, then
interleaved runs, median wall time of each.

    python benchmarks/bench_cli.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import result, step

TARGET = 10.0
BIN = Path(sys.executable).parent


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    commands = {
        "closedloop": [str(BIN / "closedloop"), "rollback", "--help"],
        "python": [sys.executable, "-c", "pass"],
        "pandas": [sys.executable, "-c", "import pandas"],
    }
    for cmd in commands.values():  # warm-up: the page cache, .pyc files
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    shown = (" ".join([Path(cmd[0]).name, *cmd[1:]]) for cmd in commands.values())
    step(f"{args.runs} interleaved runs of each: {'; '.join(shown)}")
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"  for scale, `python -c 'import pandas'`: {median['pandas'] * 1000:.0f} ms")
    result(
        "cli: cold start of `closedloop rollback --help` vs `python -c pass`",
        f"{median['closedloop'] * 1000:.0f} ms",
        f"{median['python'] * 1000:.0f} ms",
        median["closedloop"] / median["python"],
        TARGET,
    )


if __name__ == "__main__":
    main()
