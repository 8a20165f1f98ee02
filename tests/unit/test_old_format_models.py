"""Models saved before `model.net` existed still load, are served, and are judged as champion.

Their config.json says ``"model": {"arch": "mlp" | "cnn", ...}`` and their weights use the
key names of the networks of that time (git history of src/closedloop/models/nets.py). The
directories are written here in that format, key names spelt out, not by today's code.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from closedloop.capture.store import NullStore
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.evaluation.evaluate import evaluate
from closedloop.gating.gate import gate_reports
from closedloop.io import read_json, sha256_file, write_json
from closedloop.models.persist import load_model, predict_proba
from closedloop.paths import CANDIDATE_DIR, CHAMPION_DIR, CHAMPION_ENTRY, COMPARISON, EVAL_DIR
from closedloop.serving.server import create_app, load_served_model
from closedloop.training.train import train
from tests.conftest import ROOT
from tests.fixtures import entry

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
# Classifier(net=MLP): MLP.net = Sequential(Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear)
OLD_MLP_KEYS = ["mean", "std"] + [f"net.net.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
OLD_MLP_CONFIG = {
    "name": "mlp",
    "arch": "mlp",
    "hidden_sizes": [64, 64],
    "dropout": 0.1,
    "lr": 0.003,
    "weight_decay": 0.0001,
    "batch_size": 32,
}
# Classifier(net=CNN): CNN.features = (Conv2d, ReLU, Conv2d, ReLU, Pool, Flatten), CNN.head
OLD_CNN_SHAPES = {
    "mean": (64,),
    "std": (64,),
    "net.features.0.weight": (16, 1, 3, 3),
    "net.features.0.bias": (16,),
    "net.features.2.weight": (32, 16, 3, 3),
    "net.features.2.bias": (32,),
    "net.head.0.weight": (64, 128),
    "net.head.0.bias": (64,),
    "net.head.3.weight": (10, 64),
    "net.head.3.bias": (10,),
}
OLD_CNN_CONFIG = {
    "name": "cnn",
    "arch": "cnn",
    "input_shape": [1, 8, 8],
    "channels": [16, 32],
    "kernel_size": 3,
    "hidden_size": 64,
    "dropout": 0.1,
    "lr": 0.002,
    "weight_decay": 0.0001,
    "batch_size": 64,
}


def write_old_model(out, model_cfg: dict, state: dict, features, classes, target, time_column):
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    config = {
        "model": model_cfg,
        "features": features,
        "classes": classes,
        "target": target,
        "time_column": time_column,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A candidate trained today, and beside it as champion an old-format model directory
    holding the same weights under the old key names (so both must predict alike)."""
    root = tmp_path_factory.mktemp("old-format")
    params = compose(["trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        collect(params, data_dir=root / "data")
        train(params)
        trained = load_file(str(root / CANDIDATE_DIR / "model.safetensors"))
        assert sorted(trained) == sorted(OLD_MLP_KEYS), "today's layout must stay the old one"
        old = {k: trained[k] for k in OLD_MLP_KEYS}
        write_old_model(
            root / CHAMPION_DIR, OLD_MLP_CONFIG, old, FEATURES, CLASSES, "weather", "date"
        )
        digest = sha256_file(root / CHAMPION_DIR / "model.safetensors")
        write_json(
            root / CHAMPION_ENTRY,
            {**entry(0, "v0.9.0"), "present": True, "model_hash": digest},
        )
    return root, params


def test_old_mlp_directory_loads_as_the_same_network(project):
    root, params = project
    old, config = load_model(root / CHAMPION_DIR, params["allowed_targets"])
    new, _ = load_model(root / CANDIDATE_DIR, params["allowed_targets"])
    assert config["model"]["net"]["_target_"] == "closedloop.models.nets.MLP"
    x = torch.randn(50, 4) * 5 + 10
    assert torch.equal(predict_proba(old, x), predict_proba(new, x))


def test_old_cnn_directory_loads(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) for k, shape in OLD_CNN_SHAPES.items()}
    state["std"] = state["std"].abs() + 0.5
    pixels = [f"px_{i}" for i in range(64)]
    write_old_model(
        tmp_path, OLD_CNN_CONFIG, state, pixels, [str(d) for d in range(10)], "digit", None
    )
    params = compose([], conf_dir=ROOT / "conf")
    model, config = load_model(tmp_path, params["allowed_targets"])
    assert config["model"]["net"]["_target_"] == "closedloop.models.nets.CNN"
    probs = predict_proba(model, torch.rand(7, 64) * 16)
    assert probs.shape == (7, 10) and torch.allclose(probs.sum(1), torch.ones(7))


def test_old_model_with_an_unknown_arch_is_refused_in_one_line(tmp_path):
    write_old_model(tmp_path, {**OLD_MLP_CONFIG, "arch": "rnn"}, {}, FEATURES, CLASSES, "w", None)
    with pytest.raises(Exception) as info:
        load_model(tmp_path, compose([], conf_dir=ROOT / "conf")["allowed_targets"])
    message = str(info.value)
    assert "config.json: model.arch: unknown architecture 'rnn'" in message and "\n" not in message


def test_old_model_is_served(project):
    root, params = project
    served = load_served_model(root / CHAMPION_DIR, allowed=params["allowed_targets"])
    with TestClient(create_app(params, served, NullStore())) as client:
        r = client.post(
            "/predict",
            json={
                "features": {"precipitation": 0.0, "temp_max": 12.8, "temp_min": 5.0, "wind": 4.7}
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] in CLASSES


def test_old_model_is_judged_as_the_champion(project, monkeypatch):
    root, params = project
    monkeypatch.chdir(root)
    evaluate(params)
    comparison = read_json(COMPARISON)
    assert comparison["champion"]["version"] == "v0.9.0"
    frame = pd.read_csv(root / EVAL_DIR / "production.csv")
    assert len(frame) == 730 and (frame.champion_predicted == frame.predicted).all()
    (root / "reports/drift.json").unlink(missing_ok=True)
    result = gate_reports(params)
    names = {c.name: c for c in result.checks}
    assert {"vs_champion:accuracy", "vs_champion:macro_f1"} <= set(names)
    assert result.policy != "first_model:floors_only"
