"""End to end: a canary server → traffic with feedback → export → `closedloop rollout decide`,
which decides from the server's own records. Real processes on free 127.0.0.1 ports."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import urllib.request

from closedloop.config import compose, dump
from closedloop.data.collect import collect
from closedloop.serving.server import spawn
from closedloop.training.train import train
from tests.conftest import ROOT, run


def test_a_canary_server_s_records_give_a_decision(tmp_path):
    # the rollout's thresholds are lowered: traffic lasts seconds here, not a day
    overrides = [
        "trainer=cpu",
        "rollout=canary",
        "rollout.share=0.5",
        "rollout.min_hours=0",
        "rollout.min_requests=200",
    ]
    params = compose([*overrides, "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        train(params, snapshot=tmp_path / "snap", out_dir=tmp_path / "champion")
        weaker = compose([*overrides, "trainer.max_epochs=1"], conf_dir=ROOT / "conf")
        train(weaker, snapshot=tmp_path / "snap", out_dir=tmp_path / "candidate")
    finally:
        os.chdir(cwd)
    (tmp_path / "params.yaml").write_text(dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["--model-dir", "champion", "--candidate-dir", "candidate"]
    proc, url = spawn([*args, "--store-url", "sqlite:///fb.db"], cwd=tmp_path, env=env)
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            rollout = json.loads(r.read())["rollout"]
        assert (rollout["mode"], rollout["share"], rollout["breaker"]) == ("canary", 0.5, "closed")
        assert rollout["candidate"].startswith("candidate-")
        sent = run(
            [sys.executable, "-m", "closedloop", "simulate", "--url", url, "--snapshot", "snap",
             "--limit", "800", "--rate", "0", "--feedback-coverage", "1.0", "--max-seconds", "300"],
            tmp_path, extra_env=env,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)  # the store flushes its last batch
        proc.wait(30)
    assert "800 ok" in sent.stdout, sent.stdout
    with sqlite3.connect(tmp_path / "fb.db") as conn:
        arms = dict(conn.execute("select arm, count(*) from predictions group by arm").fetchall())
        labelled = conn.execute("select count(distinct request_id) from feedback").fetchone()[0]
        answered_by = dict(
            conn.execute(
                "select arm, count(distinct model_version) from predictions group by arm"
            ).fetchall()
        )
    assert sum(arms.values()) == 800 and set(arms) == {"champion", "candidate"}
    assert answered_by == {"champion": 1, "candidate": 1} and labelled == 800

    run([sys.executable, "-m", "closedloop", "export", "--store-url", "sqlite:///fb.db",
         "--no-dvc"], tmp_path, extra_env=env)  # fmt: skip
    decided = run(
        [sys.executable, "-m", "closedloop", "rollout", "decide", "--data-dir", "data"],
        tmp_path, extra_env=env,
    )  # fmt: skip
    report = json.loads((tmp_path / "reports/rollout.json").read_text())
    assert report["mode"] == "canary" and report["share"] == 0.5
    assert report["records"]["kept"] == 800
    assert report["exposure"] == {
        "champion": arms["champion"],
        "candidate": arms["candidate"],
        "labelled_champion": arms["champion"],
        "labelled_candidate": arms["candidate"],
    }
    assert report["srm"]["passed"], report["srm"]
    assert {g["metric"] for g in report["guardrails"]} == {"error_rate", "latency_p99", "accuracy"}
    assert all(g["n_candidate"] > 0 for g in report["guardrails"])
    assert report["outcome"] in ("pass", "fail", "inconclusive")  # a real decision, not invalid
    assert decided.stdout.startswith(f"rollout: {report['outcome'].upper()}, {report['action']}:")
