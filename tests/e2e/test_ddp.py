"""Lightning DDP: two CPU processes over gloo train a model that evaluate then scores."""

from __future__ import annotations

import json

from closedloop.config import compose, dump
from tests.conftest import ROOT, run


def test_two_process_cpu_ddp_trains_and_evaluates(tmp_path):
    params = compose(
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=3"],
        conf_dir=ROOT / "conf",
    )
    (tmp_path / "params.yaml").write_text(dump(params))
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models/registry.yaml").write_text((ROOT / "models/registry.yaml").read_text())
    stage_env = {"PYTHONPATH": str(ROOT)}
    for stage in ("collect", "champion", "train", "evaluate"):  # no champion yet
        proc = run(["python", "-m", f"pipelines.{stage}"], tmp_path, extra_env=stage_env)
    card = json.loads((tmp_path / "models/candidate/card.json").read_text())
    assert card["world_size"] == 2
    assert card["trainer"]["strategy"] == "ddp"
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert metrics["val"]["n"] == 184 and 0 <= metrics["val"]["accuracy"] <= 1
    assert "evaluate:" in proc.stdout
