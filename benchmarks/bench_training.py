"""Our Lightning training against a plain PyTorch loop: same model, data, batches and epochs.

Target: ratio <= 1.10, on both numerical paths, each in a fresh process (MKL and ATen read
their settings once): `numerics` pinned as conf/config.yaml has it, which is how `dvc repro`
trains (one thread, portable kernels), and `numerics` left to the CPU (its threads and
vector kernels), where each step is shortest and Lightning's fixed cost per step weighs
most. Both sides train the same initial weights on the same batches and run one validation
pass per epoch; the ratio is the median of interleaved repeats, which alternate which side
goes first so that warm-up and drift hit both.

    python benchmarks/bench_training.py [--rows 200000] [--epochs 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import result, step

from closedloop.config import compose
from closedloop.numerics import environment

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.10
PATHS = {  # the numerical paths measured, each in a worker process of its own
    "pinned": "numerics pinned, as dvc repro trains",
    "free": "numerics left to the CPU",
}


def plain_loop(model, data, optimizer: dict, epochs, batch_size, seed) -> float:
    """The loop a careful engineer writes for the same result: batches indexed straight out
    of the tensors (a seeded permutation per epoch, no DataLoader, no per-row collate), the
    configured optimiser, and the same per-epoch history (train loss, val loss, val accuracy)
    LitClassifier keeps."""
    import torch
    from hydra.utils import instantiate

    x_tr, y_tr, x_va, y_va = data
    opt = instantiate(optimizer)(model.parameters())  # the configured one: fused AdamW
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        loss_sum = torch.zeros(())
        perm = torch.randperm(len(y_tr), generator=gen)
        for i in range(0, len(perm), batch_size):
            rows = perm[i : i + batch_size]
            x, y = x_tr[rows], y_tr[rows]
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
        model.eval()
        val_loss, val_acc, batches = 0.0, 0.0, 0
        with torch.no_grad():
            for i in range(0, len(y_va), 4096):
                x, y = x_va[i : i + 4096], y_va[i : i + 4096]
                logits = model(x)
                val_loss += float(loss_fn(logits, y))
                val_acc += float((logits.argmax(1) == y).float().mean())
                batches += 1
        history.append((epoch, float(loss_sum / len(y_tr)), val_loss / batches, val_acc / batches))
    return time.perf_counter() - start


def lightning_fit(model, train_dl, val_dl, params) -> float:
    from closedloop.training.module import build_module
    from closedloop.training.train import make_trainer

    lit = build_module(params["model"], model, params["allowed_targets"])
    trainer = make_trainer({**params["trainer"], "max_epochs": params["trainer"]["max_epochs"]})
    start = time.perf_counter()
    trainer.fit(lit, train_dl, val_dl)
    return time.perf_counter() - start


def measure(params: dict, rows: int, epochs: int, repeats: int) -> dict:
    """The worker: both sides, interleaved, in this process; their times as a dict."""
    import lightning as L

    from closedloop.data.collect import collect
    from closedloop.models.nets import build_model
    from closedloop.training.train import loaders

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # collect writes reports/quarantine.parquet under the working directory
        snap = Path(tmp) / "snap"
        collect(params, out_dir=snap, data_dir=Path(tmp))
        schema, encoding, train_dl, val_dl, (x_train, _) = loaders(params, snap)
        L.seed_everything(0, verbose=False)
        base = build_model(
            params["model"],
            encoding.width,
            len(schema.classes),
            params["allowed_targets"],
        )
        base.set_standardisation(x_train)
        data = (*train_dl.dataset.tensors, *val_dl.dataset.tensors)
        runs = {
            "ours": lambda: lightning_fit(copy.deepcopy(base), train_dl, val_dl, params),
            "plain": lambda: plain_loop(
                copy.deepcopy(base),
                data,
                params["model"]["optimizer"],
                epochs,
                params["model"]["batch_size"],
                0,
            ),
        }
        times: dict = {"ours": [], "plain": [], "steps": len(train_dl) * epochs}
        for i in range(repeats):  # interleaved, alternating which goes first
            for side in ("ours", "plain") if i % 2 == 0 else ("plain", "ours"):
                step(f"repeat {i + 1}/{repeats}: {side}, {epochs} epochs")
                times[side].append(runs[side]())
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # a worker: the JSON file it writes
    args = ap.parse_args()
    params = compose(
        [
            "dataset=synthetic",
            f"dataset.source.n_samples={args.rows}",
            "model.net.hidden_sizes=[256,256]",
            "model.batch_size=512",
            "trainer=cpu",
            f"trainer.max_epochs={args.epochs}",
        ],
        conf_dir=ROOT / "conf",
    )
    if args.worker:
        times = measure(params, args.rows, args.epochs, args.repeats)
        return Path(args.worker).write_text(json.dumps(times), encoding="utf-8")
    for path, what in PATHS.items():
        step(f"{what}: making {args.rows:,} synthetic rows, then {args.repeats} rounds")
        env = {**os.environ, **(environment(params["numerics"]) if path == "pinned" else {})}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "times.json"
            subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--worker", str(out)], env=env, check=True
            )
            times = json.loads(out.read_text(encoding="utf-8"))
        ours, plain = times["ours"], times["plain"]
        result(
            f"training ({what}): Lightning vs plain torch loop",
            f"{statistics.median(ours):.2f}s",
            f"{statistics.median(plain):.2f}s ({args.rows:,} rows, {times['steps']:,} steps)",
            statistics.median(o / p for o, p in zip(ours, plain, strict=True)),
            TARGET,
        )


if __name__ == "__main__":
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    main()
