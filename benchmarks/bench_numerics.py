"""The price of same bytes on any CPU: training with conf/config.yaml's `numerics` pinned
(MKL_CBWR=COMPATIBLE, ATEN_CPU_CAPABILITY=default, one intra-op thread) vs left to the CPU.

Reported, not gated: the ratio grows with the cores and vector units that pinning gives up,
so no one target fits every machine. Both sides train the same model on the same rows in
fresh processes (MKL and ATen read their settings once, before torch computes anything),
interleaved and alternating which goes first; the ratio is the median of the per-pair ratios.

    python benchmarks/bench_numerics.py [--rows 20000] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import result, step

ROOT = Path(__file__).resolve().parents[1]
FREE = [
    "numerics.mkl_cbwr=null",
    "numerics.aten_cpu_capability=null",
    "numerics.intra_op_threads=null",
]


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
        f"dataset.synthetic.n_samples={args.rows}",
        "model.hidden_sizes=[256,256]",
        "model.batch_size=512",
        "trainer=cpu",
        f"trainer.max_epochs={args.epochs}",
    ]
    sides = {"pinned": base, "free": base + FREE}
    got: dict[str, list[dict]] = {"pinned": [], "free": []}
    for i in range(args.repeats):  # interleaved, alternating which goes first
        for side in ("pinned", "free") if i % 2 == 0 else ("free", "pinned"):
            step(f"repeat {i + 1}/{args.repeats}: training with numerics {side}")
            got[side].append(run(sides[side]))
    ratios = [p["seconds"] / f["seconds"] for p, f in zip(got["pinned"], got["free"], strict=True)]
    pinned, free = got["pinned"][0], got["free"][0]
    result(
        "numerics: training pinned (same bytes) vs left to the CPU",
        f"{statistics.median(r['seconds'] for r in got['pinned']):.1f}s "
        f"({pinned['threads']} thread, {pinned['aten']})",
        f"{statistics.median(r['seconds'] for r in got['free']):.1f}s "
        f"({free['threads']} threads, {free['aten']})",
        statistics.median(ratios),
        None,
    )


if __name__ == "__main__":
    main()
