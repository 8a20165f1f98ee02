"""Models: both networks train through Lightning; weights load without pickle and build only
networks under allowed_targets."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from closedloop.artefacts.card import ModelCard
from closedloop.config import compose, validate
from closedloop.data.collect import collect
from closedloop.errors import ConfigError
from closedloop.models.nets import build_model
from closedloop.models.persist import load_model, predict_proba, save_model
from closedloop.training.module import LitClassifier
from closedloop.training.train import train
from tests.conftest import ROOT


def test_save_and_load_round_trip_without_pickle(tmp_path):
    cfg = compose(["trainer=cpu"], conf_dir=ROOT / "conf")
    model = build_model(cfg["model"], 4, 5, cfg["allowed_targets"])
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
    loaded, _ = load_model(tmp_path, cfg["allowed_targets"])
    x = torch.randn(20, 4)
    model.eval()
    assert torch.equal(predict_proba(model, x), predict_proba(loaded, x))
    assert len(digest) == 64


def test_cnn_rejects_features_that_do_not_fit_its_input_shape():
    cfg = compose(["model=cnn"], conf_dir=ROOT / "conf")
    with pytest.raises(
        ConfigError, match=r"model\.net \(closedloop\.models\.nets\.CNN\): input_shape"
    ):
        build_model(cfg["model"], 4, 5, cfg["allowed_targets"])


@pytest.mark.parametrize(
    "overrides", [["dataset=digits", "model=cnn"], ["dataset=digits", "model=mlp"]]
)
def test_train_writes_weights_and_card(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    params = compose([*overrides, "trainer=cpu", "trainer.max_epochs=3"], conf_dir=ROOT / "conf")
    collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    card = train(params, snapshot=tmp_path / "snap", out_dir=tmp_path / "model")
    assert card == ModelCard.read(tmp_path / "model" / "card.json")
    assert card.parameters == sum(
        p.numel() for p in load_model(tmp_path / "model", params["allowed_targets"])[0].parameters()
    )
    assert card.final["val_acc"] > 0.5  # digits are easy: three epochs learn something real
    assert (tmp_path / "model" / "card.md").read_text().startswith("# Model card")


# ------------------------------------------------------- loading builds only allowed targets
@pytest.fixture
def saved(tmp_path):
    cfg = compose([], conf_dir=ROOT / "conf")
    model = build_model(cfg["model"], 4, 5, cfg["allowed_targets"])
    config = {"model": cfg["model"], "features": list("abcd"), "classes": list("vwxyz")}
    save_model(model, config, tmp_path)
    return tmp_path, cfg["allowed_targets"]


def _point_net_at(model_dir, target: str) -> None:
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["model"]["net"]["_target_"] = target
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("os.system", ["'os.system' is not under allowed_targets"]),
        ("acme_nets.TinyNet", ["'acme_nets.TinyNet' is not under allowed_targets"]),
        # an allowed-looking name that reaches torch.load, which unpickles
        ("closedloop.models.nets.torch.load", ["torch.serialization.load", "not under"]),
    ],
)
def test_a_saved_model_naming_a_target_outside_allowed_targets_is_refused(saved, target, words):
    model_dir, allowed = saved
    _point_net_at(model_dir, target)
    with pytest.raises(ConfigError) as info:
        load_model(model_dir, allowed)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"{model_dir}/config.json: model.net._target_"
    )
    assert all(w in message for w in words), message


def test_allowed_targets_come_from_the_caller_not_the_model(saved):
    """The same directory loads or not depending on params allowed_targets alone."""
    model_dir, allowed = saved
    load_model(model_dir, allowed)
    with pytest.raises(ConfigError, match="not under allowed_targets"):
        load_model(model_dir, [p for p in allowed if p != "closedloop.models."])


# ------------------------------------------------------------- your own LightningModule
class DecayingModule(LitClassifier):
    """A user's module: the library's training step plus an exponential learning-rate decay."""

    def __init__(self, model, optimizer, loss, gamma: float):
        super().__init__(model, optimizer, loss)
        self.gamma = gamma

    def configure_optimizers(self):
        opt = super().configure_optimizers()
        return {
            "optimizer": opt,
            "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(opt, self.gamma),
        }


def _weights(tmp_path, name: str, module: dict) -> dict:
    params = compose(["trainer=cpu", "trainer.max_epochs=3"], conf_dir=ROOT / "conf")
    params["model"]["module"] = module
    params["allowed_targets"] = [*params["allowed_targets"], "tests.unit.test_models."]
    params = validate(params)
    collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    train(params, snapshot=tmp_path / "snap", out_dir=tmp_path / name)
    return load_file(str(tmp_path / name / "model.safetensors"))


def test_your_own_lightning_module_trains_with_its_yaml_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = "tests.unit.test_models.DecayingModule"
    base = _weights(tmp_path, "base", {"_target_": "closedloop.training.module.LitClassifier"})
    same = _weights(tmp_path, "same", {"_target_": own, "gamma": 1.0})
    decayed = _weights(tmp_path, "decayed", {"_target_": own, "gamma": 0.1})
    assert all(torch.equal(base[k], same[k]) for k in base), "gamma 1 must change nothing"
    assert not all(torch.equal(base[k], decayed[k]) for k in base), "the module was not used"
