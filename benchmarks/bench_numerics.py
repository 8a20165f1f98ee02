"""The price of same bytes on any CPU: training with conf/config.yaml's `numerics` pinned
(MKL_CBWR=COMPATIBLE, ATEN_CPU_CAPABILITY=default, one intra-op thread) vs left to the CPU.

Reported, not gated: the ratio grows with the cores and vector units that pinning gives up,
so no one target fits every machine. Both sides train the same model on the same rows in
fresh processes (MKL and ATen read their settings once, before torch computes anything),
interleaved and alternating the order; the ratio is the median of the per-round ratios. A
third side, the CPU's kernels on one thread, splits the price into its two parts: the
portable kernels and the single thread (on a busy machine, one thread can even be faster).

    python benchmarks/bench_numerics.py [--rows 20000] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import result, step

ROOT = Path(__file__).resolve().parents[1]
CPU_KERNELS = ["numerics.mkl_cbwr=null", "numerics.aten_cpu_capability=null"]
FREE = [*CPU_KERNELS, "numerics.intra_op_threads=null"]
ONE_THREAD = "CPU's kernels, 1 thread"


def fit(overrides: list[str]) -> None:
    """One training run in this process: print its fit time and the path it ran on as JSON."""
    sys.path.insert(0, str(ROOT / "src"))
    from closedloop.config import compose
    from closedloop.numerics import pin

    params = compose(overrides, conf_dir=ROOT / "conf")
    pin(params["numerics"])  # before torch computes anything, as pipelines/__init__.py does
    import logging

    import torch

    from closedloop.data.collect import collect
    from closedloop.training.train import train

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # collect and train also write reports/ under the working directory
        snap = Path(tmp) / "snapshot"
        collect(params, out_dir=snap, data_dir=Path(tmp) / "data")
        start = time.perf_counter()
        train(params, snapshot=snap, out_dir=Path(tmp) / "candidate")
        seconds = time.perf_counter() - start
    path = {"threads": torch.get_num_threads(), "aten": torch.backends.cpu.get_cpu_capability()}
    print(json.dumps({"seconds": seconds, **path}))


def run(overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--fit", json.dumps(overrides)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fit", help=argparse.SUPPRESS)  # the worker: JSON list of overrides
    args = ap.parse_args()
    if args.fit:
        return fit(json.loads(args.fit))
    base = [
        "dataset=synthetic",
        f"dataset.source.n_samples={args.rows}",
        "model.net.hidden_sizes=[256,256]",
        "model.batch_size=512",
        "trainer=cpu",
        f"trainer.max_epochs={args.epochs}",
    ]
    sides = {"pinned": base, ONE_THREAD: base + CPU_KERNELS, "free": base + FREE}
    got: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(args.repeats):  # interleaved, alternating the order
        for side in list(sides) if i % 2 == 0 else list(sides)[::-1]:
            step(f"repeat {i + 1}/{args.repeats}: training with numerics {side}")
            got[side].append(run(sides[side]))

    def ratio(a: str, b: str) -> float:
        pairs = zip(got[a], got[b], strict=True)
        return statistics.median(x["seconds"] / y["seconds"] for x, y in pairs)

    pinned, free = got["pinned"][0], got["free"][0]
    print(
        f"  of which the portable kernels: {ratio('pinned', ONE_THREAD):.3f}; one thread "
        f"instead of {free['threads']}: {ratio(ONE_THREAD, 'free'):.3f}"
    )
    result(
        "numerics: training pinned (same bytes) vs left to the CPU",
        f"{statistics.median(r['seconds'] for r in got['pinned']):.1f}s "
        f"({pinned['threads']} thread, {pinned['aten']})",
        f"{statistics.median(r['seconds'] for r in got['free']):.1f}s "
        f"({free['threads']} threads, {free['aten']})",
        ratio("pinned", "free"),
        None,
    )


if __name__ == "__main__":
    main()
