"""Models: both architectures train through Lightning; weights load without pickle."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from closedloop.artefacts.card import ModelCard
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.models.nets import build_model
from closedloop.models.persist import load_model, predict_proba, save_model
from closedloop.training.train import train
from tests.conftest import ROOT


def test_save_and_load_round_trip_without_pickle(tmp_path):
    cfg = compose(["trainer=cpu"], conf_dir=ROOT / "conf")
    model = build_model(cfg["model"], 4, 5)
    model.set_standardisation(torch.randn(50, 4) * 3 + 1)
    config = {
        "model": cfg["model"],
        "features": list("abcd"),
        "classes": list("vwxyz"),
        "target": "t",
    }
    digest = save_model(model, config, tmp_path)
    # The weights file is plain safetensors: tensors and a JSON header, nothing executable.
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert {"mean", "std"} <= set(f.keys())
    assert json.loads((tmp_path / "config.json").read_text())["classes"] == list("vwxyz")
    loaded, _ = load_model(tmp_path)
    x = torch.randn(20, 4)
    model.eval()
    assert torch.equal(predict_proba(model, x), predict_proba(loaded, x))
    assert len(digest) == 64


def test_cnn_rejects_features_that_do_not_fit_its_input_shape():
    cfg = compose(["model=cnn"], conf_dir=ROOT / "conf")
    with pytest.raises(ValueError, match="input_shape"):
        build_model(cfg["model"], 4, 5)


@pytest.mark.parametrize(
    "overrides", [["dataset=digits", "model=cnn"], ["dataset=digits", "model=mlp"]]
)
def test_train_writes_weights_and_card(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    params = compose([*overrides, "trainer=cpu", "trainer.max_epochs=3"], conf_dir=ROOT / "conf")
    collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    card = train(params, snapshot=tmp_path / "snap", out_dir=tmp_path / "model")
    assert card == ModelCard.read(tmp_path / "model" / "card.json")
    assert card.parameters == sum(p.numel() for p in load_model(tmp_path / "model")[0].parameters())
    assert card.final["val_acc"] > 0.5  # digits are easy: three epochs learn something real
    assert (tmp_path / "model" / "card.md").read_text().startswith("# Model card")
