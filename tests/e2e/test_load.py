"""A real server under bounded load on 127.0.0.1: what was acknowledged is stored, exactly,
even when the server is killed with SIGKILL mid-load."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import time

import httpx
import pytest

from closedloop.capture.export import export
from closedloop.capture.feedback import load
from closedloop.config import compose, dump
from closedloop.data.collect import collect
from closedloop.serving.server import spawn
from closedloop.training.train import train
from tests.conftest import ROOT

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """params.yaml and a trained model in a scratch directory, as a deployment would have."""
    tmp = tmp_path_factory.mktemp("load")
    params = compose(["trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    (tmp / "params.yaml").write_text(dump(params))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        collect(params, out_dir=tmp / "snap", data_dir=tmp)
        train(params, snapshot=tmp / "snap", out_dir=tmp / "model")
    finally:
        os.chdir(cwd)
    return tmp


def start(project, db) -> tuple[subprocess.Popen, str]:
    args = ["--model-dir", "model", "--store-url", f"sqlite:///{db}"]
    return spawn(args, cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


async def hammer(url: str, n: int, concurrency: int, acked: list[str], deadline: float) -> None:
    """Send n predictions, at most `concurrency` in flight; keep the ids of every 2xx."""
    rng = random.Random(0)
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def one(i: int) -> None:
            async with sem:
                if time.monotonic() > deadline:
                    return
                features = {f: round(rng.uniform(0, 20), 2) for f in FEATURES}
                try:
                    r = await client.post("/predict", json={"features": features})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(r.json()["request_id"])

        await asyncio.gather(*(one(i) for i in range(n)))


def stored_ids(db) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("select request_id from predictions")}


def test_20k_predictions_at_concurrency_16_are_all_stored_and_feedback_joins(project):
    db = project / "load.db"
    proc, url = start(project, db)
    acked: list[str] = []
    try:
        started = time.perf_counter()
        asyncio.run(hammer(url, 20_000, 16, acked, time.monotonic() + 300))
        seconds = time.perf_counter() - started
        sample = random.Random(1).sample(acked, 500)
        with httpx.Client(base_url=url, timeout=10) as client:
            for rid in sample:
                assert (
                    client.post("/feedback", json={"request_id": rid, "label": "fog"}).status_code
                    == 200
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(
        f"\n{len(acked)} predictions acknowledged in {seconds:.1f}s ({len(acked) / seconds:.0f}/s)"
    )
    assert len(acked) == 20_000
    assert stored_ids(db) == set(acked)  # stored == acknowledged, no more, no less
    export(f"sqlite:///{db}", project / "data")
    fb = load(
        project / "data",
        {"target": "weather", "time_column": "date"},
        FEATURES,
        ["drizzle", "fog", "rain", "snow", "sun"],
    )
    assert fb.counts["predictions_kept"] == 20_000 and fb.counts["labelled_rows"] == 500


def test_sigkill_mid_load_loses_nothing_acknowledged(project):
    db = project / "kill.db"
    proc, url = start(project, db)
    acked: list[str] = []

    def kill_soon():
        time.sleep(3)
        proc.send_signal(signal.SIGKILL)

    import threading

    threading.Thread(target=kill_soon, daemon=True).start()
    asyncio.run(hammer(url, 50_000, 16, acked, time.monotonic() + 30))
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) > 100, "the kill came before any load"
    proc, url = start(project, db)  # restart on the same store: WAL recovery
    try:
        missing = set(acked) - stored_ids(db)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not missing, f"{len(missing)} acknowledged predictions lost"
