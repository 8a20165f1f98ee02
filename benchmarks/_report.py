"""What every benchmark reports: progress as it goes, and one result per target it measures.

A result prints as a line at once and, under `make bench` (benchmarks/run.py), is recorded in
the file CLOSEDLOOP_BENCH_RESULTS names, for the summary table at the end.
"""

from __future__ import annotations

import json
import operator
import os
import time

RESULTS_ENV = "CLOSEDLOOP_BENCH_RESULTS"
_START = time.perf_counter()
CHECKS = {"<=": operator.le, ">=": operator.ge}


def step(what: str) -> None:
    """Say what is being measured now (the run would otherwise be silent for minutes)."""
    print(f"  [{time.perf_counter() - _START:6.1f}s] {what}", flush=True)


def result(
    name: str, ours: str, baseline: str, ratio: float, target: float | None, sense: str = "<="
) -> bool:
    """Record one measured ratio against its target (None: reported, not gated); True when
    the target is met or there is none."""
    ok = target is None or CHECKS[sense](ratio, target)
    verdict = "reported" if target is None else ("OK" if ok else "MISSED")
    row = {
        "benchmark": name,
        "ours": ours,
        "baseline": baseline,
        "ratio": f"{ratio:.3f}",
        "target": "none" if target is None else f"{sense} {target:g}",
        "result": verdict,
    }
    print(
        f"  => {name}: {ours} vs {baseline}  ratio {row['ratio']}  target {row['target']}  "
        f"{verdict}",
        flush=True,
    )
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return ok
