"""Model selection on the default Seattle config: the shipped weights are the best epoch's.

The loop's collect and train run in a scratch directory as `dvc repro` would (the default
config, CPU). The card's best_epoch must be the epoch of the lowest val loss in
reports/train/history.csv, and the saved model.safetensors must reproduce that epoch's val
loss (not the last epoch's) when it is loaded back and scored on the val split.
"""

from __future__ import annotations

import csv

import pytest
import torch

from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.data.snapshot import read_schema, read_split, tensors
from closedloop.errors import ConfigError
from closedloop.instantiate import instantiate
from closedloop.models.encoding import Encoding
from closedloop.models.persist import load_model
from closedloop.paths import CANDIDATE_DIR, SNAPSHOT_DIR, TRAIN_HISTORY
from closedloop.training.module import TASK_LOSS
from closedloop.training.train import train
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    params = compose([], conf_dir=ROOT / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        collect(params, SNAPSHOT_DIR, root / "data")
        card = train(params, SNAPSHOT_DIR, CANDIDATE_DIR)
    with (root / TRAIN_HISTORY).open(newline="") as f:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return root, params, card, history


def val_loss_of_saved_model(root, params) -> float:
    model, config = load_model(root / CANDIDATE_DIR, params["allowed_targets"])
    schema = read_schema(root / SNAPSHOT_DIR)
    x, y = tensors(read_split("val", root / SNAPSHOT_DIR), schema, Encoding.from_config(config))
    node = params["model"]["loss"] or {"_target_": TASK_LOSS[config["task"]]}  # null: the task's
    loss = instantiate(node, params["allowed_targets"], "model.loss")
    with torch.no_grad():
        return float(loss(model.eval()(torch.from_numpy(x)), torch.from_numpy(y)))


def test_best_epoch_is_the_lowest_val_loss_and_its_weights_ship(trained):
    root, params, card, history = trained
    losses = [h["val_loss"] for h in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    print(f"\nval loss per epoch: {losses}\nbest epoch {best}, {len(losses)} epochs run")
    assert card.monitor == "val_loss" and card.best_epoch == best
    assert card.best["val_loss"] == pytest.approx(losses[best], abs=1e-6)
    # early stopping: patience epochs after the best, then stop (or max_epochs)
    patience = params["trainer"]["selection"]["patience"]
    assert len(history) == min(best + patience + 1, params["trainer"]["max_epochs"])
    assert card.epochs == len(history) and card.stopped_early == (len(history) < 40)
    assert best != len(history) - 1  # on this data the last epoch is not the best
    shipped = val_loss_of_saved_model(root, params)
    assert shipped == pytest.approx(losses[best], abs=1e-5)
    assert abs(shipped - losses[-1]) > 1e-3  # not the last epoch's weights
    # the checkpoint lived in a temporary directory: nothing is left in the project
    left = sorted(p.name for p in root.rglob("*") if p.suffix in (".ckpt", ".safetensors"))
    assert left == ["model.safetensors"], left
    md = (root / CANDIDATE_DIR / "card.md").read_text()
    assert f"epoch {best}, the best on `val_loss`" in md


def test_a_monitor_the_module_does_not_log_is_one_line(trained, tiny_params):
    root, _, _, _ = trained
    trainer = tiny_params["trainer"]
    params = {
        **tiny_params,
        "trainer": {**trainer, "selection": {**trainer["selection"], "monitor": "val_los"}},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        with pytest.raises(ConfigError) as e:
            train(params, SNAPSHOT_DIR, root / "other-candidate")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("params.yaml: trainer.selection.monitor: 'val_los'"), message
