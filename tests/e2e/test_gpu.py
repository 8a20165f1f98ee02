"""On a CUDA machine: the gpu trainer config trains with mixed precision. Skipped without one."""

from __future__ import annotations

import pytest

from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.training.train import train
from tests.conftest import ROOT


@pytest.mark.gpu
def test_gpu_trainer_config_trains_on_cuda(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = compose(["trainer=gpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    card = train(params, snapshot=tmp_path / "snap", out_dir=tmp_path / "model")
    assert card["device"].startswith("cuda")
    assert card["trainer"]["precision"] == "16-mixed"
