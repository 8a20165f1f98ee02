"""Drift measurement at scale: sampling to drift.row_cap keeps it flat and keeps its verdicts.

Synthetic numeric data, 20 columns of N(0, 1) on the reference side; on the current side
four columns get a mean shift, four a scale change, twelve nothing. One shift of each kind
sits below Evidently's threshold (normed Wasserstein distance 0.1, they score ~0.07), the
other three above it (0.15 to 0.5); sampling noise at 50,000 rows is ~0.005.

(a) time: measure_drift at --rows per side vs --small per side, with the real row_cap from
    conf/drift/default.yaml. Target: ratio <= 2.0.
(b) agreement: per column, the sampled verdict at --rows per side vs the verdict on all
    --full-rows rows (no cap). Target: share 1.0.

    python benchmarks/bench_drift.py [--rows 1000000] [--small 100000] [--full-rows 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import result, step

from closedloop.config import compose
from closedloop.evaluation.drift import measure_drift

TIME_TARGET = 2.0
AGREEMENT_TARGET = 1.0
MEAN_SHIFTS = (0.5, 0.3, 0.15, 0.07)  # normed Wasserstein ~ the shift itself
SCALES = (1.5, 1.3, 1.2, 1.1)  # normed Wasserstein ~ (scale - 1) * 0.80
N_COLUMNS = 20


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current tables with the shifts above on their first eight columns."""
    rng = np.random.default_rng(seed)
    names = [f"f_{i:02d}" for i in range(N_COLUMNS)]
    reference = rng.standard_normal((rows, N_COLUMNS))
    current = rng.standard_normal((rows, N_COLUMNS))
    for i, shift in enumerate(MEAN_SHIFTS):
        current[:, i] += shift
    for i, scale in enumerate(SCALES, start=len(MEAN_SHIFTS)):
        current[:, i] *= scale
    return pd.DataFrame(reference, columns=names), pd.DataFrame(current, columns=names)


def timed(reference, current, kinds, cfg) -> tuple[float, dict]:
    start = time.perf_counter()
    _, summary = measure_drift(reference, current, kinds, cfg)
    return time.perf_counter() - start, summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--full-rows", type=int, default=None, help="default: --rows")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    full_rows = args.full_rows or args.rows
    cfg = compose(conf_dir=Path(__file__).resolve().parents[1] / "conf")["drift"]
    cap = cfg["row_cap"]

    step(f"making {max(args.rows, full_rows):,} rows per side, {N_COLUMNS} columns")
    reference, current = frames(max(args.rows, full_rows))
    kinds = dict.fromkeys(reference.columns, "feature")
    timed(reference[:1000], current[:1000], kinds, cfg)  # warm-up: imports, first-call costs
    big, small, sampled = [], [], None
    for i in range(args.repeats):
        step(f"repeat {i + 1}/{args.repeats}: drift at {args.rows:,} and {args.small:,} rows")
        seconds, sampled = timed(reference[: args.rows], current[: args.rows], kinds, cfg)
        big.append(seconds)
        small.append(timed(reference[: args.small], current[: args.small], kinds, cfg)[0])
    ratio = statistics.median(big) / statistics.median(small)
    result(
        f"drift: time at {args.rows:,} vs {args.small:,} rows per side (row_cap {cap:,})",
        f"{statistics.median(big):.2f}s",
        f"{statistics.median(small):.2f}s",
        ratio,
        TIME_TARGET,
    )

    uncapped = {**cfg, "row_cap": full_rows}
    step(f"drift on all {full_rows:,} rows (no cap), for the sampled verdicts to agree with")
    full_seconds, full = timed(reference[:full_rows], current[:full_rows], kinds, uncapped)
    agree = [c for c in kinds if sampled["columns"][c]["drifted"] == full["columns"][c]["drifted"]]
    share = len(agree) / len(kinds)
    drifted = ", ".join(sorted(c for c in kinds if full["columns"][c]["drifted"]))
    print(f"  the full run ({full_seconds:.0f}s) found drift in: {drifted}")
    result(
        "drift: sampled vs full verdicts, share agreeing",
        f"{len(agree)}/{len(kinds)} columns at {cap:,} rows",
        f"all {full_rows:,} rows",
        share,
        AGREEMENT_TARGET,
        ">=",
    )


if __name__ == "__main__":
    main()
