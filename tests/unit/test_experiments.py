"""Experiments survive: an experiment's params.yaml is never silently replaced by conf/'s.

`dvc exp apply <name>` restores params.yaml only; the next `dvc repro` after a conf/ edit
used to recompose conf/ and drop the experiment without a word.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from closedloop.config import compose, compose_params, load_params
from closedloop.config.experiments import marked_experiment, save
from closedloop.errors import ConfigError
from tests.conftest import ROOT


@pytest.fixture
def conf(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def as_dvc_exp_run(conf, params, overrides, monkeypatch):
    """What `dvc exp run -S ...` does: DVC composes params.yaml, then the compose stage runs."""
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    cfg = compose(overrides, conf)
    cfg.pop("code")
    params.write_text(yaml.safe_dump(cfg, sort_keys=False))
    params.write_text(compose_params(params=params, conf_dir=conf))
    monkeypatch.delenv("DVC_EXP_NAME")


def test_an_experiment_is_marked_and_repro_refuses_to_drop_it_in_one_line(
    tmp_path, conf, monkeypatch
):
    params = tmp_path / "params.yaml"
    as_dvc_exp_run(conf, params, ["model.optimizer.lr=0.01"], monkeypatch)
    assert marked_experiment(params) == "exp-1"
    with pytest.raises(ConfigError) as info:
        compose_params(params=params, conf_dir=conf)  # what `dvc repro` runs next
    message = str(info.value)
    assert "\n" not in message and "holds experiment exp-1" in message
    assert "model.optimizer.lr differ" in message and "closedloop exp save exp-1" in message


def test_an_experiment_without_overrides_is_not_marked_and_plain_params_recompose(
    tmp_path, conf, monkeypatch
):
    params = tmp_path / "params.yaml"
    as_dvc_exp_run(conf, params, [], monkeypatch)
    assert marked_experiment(params) is None
    assert load_params(params) == compose([], conf)
    # an unmarked params.yaml (a conf/ edit since) is recomposed as before
    (conf / "model/mlp.yaml").write_text(
        (conf / "model/mlp.yaml").read_text().replace("lr: 0.003", "lr: 0.002")
    )
    assert yaml.safe_load(compose_params(params=params, conf_dir=conf))["model"]["optimizer"][
        "lr"
    ] == pytest.approx(0.002)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.optimizer.lr=0.01", "model.net.hidden_sizes=[128,128]"],
        ["dataset=digits", "model=cnn", "trainer.max_epochs=3"],
        ["experiment=smoke", "drift.row_cap=500"],
    ],
)
def test_exp_save_makes_conf_compose_to_the_experiment(tmp_path, conf, monkeypatch, overrides):
    params = tmp_path / "params.yaml"
    as_dvc_exp_run(conf, params, overrides, monkeypatch)
    experiment = load_params(params)
    path, groups, keys = save("tried", experiment, conf, lambda o: compose(o, conf))
    assert path == conf / "experiment/tried.yaml" and (groups or keys)
    assert "- experiment: tried #" in (conf / "config.yaml").read_text()
    assert compose([], conf) == {**experiment, "code": compose([], conf)["code"]}
    text = path.read_text()
    assert text.startswith("# @package _global_\n")
    body = [line for line in text.splitlines() if ":" in line and not line.startswith("#")]
    assert all("#" in line for line in body if not line.endswith(":")), text  # commented
    # and the next `dvc repro` keeps it: conf/ now composes to the marked params.yaml
    assert yaml.safe_load(compose_params(params=params, conf_dir=conf)) == compose([], conf)


def test_exp_save_refuses_what_conf_cannot_hold_and_writes_nothing(tmp_path, conf, monkeypatch):
    """conf/config.yaml merges its own keys (`_self_`) after the experiment: a changed seed
    cannot live in an experiment file, and saying so beats a file that does nothing."""
    params = tmp_path / "params.yaml"
    as_dvc_exp_run(conf, params, ["seed=7"], monkeypatch)
    before = (conf / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"seed differ: conf/config.yaml sets them"):
        save("tried", load_params(params), conf, lambda o: compose(o, conf))
    assert (conf / "config.yaml").read_text() == before
    assert not (conf / "experiment/tried.yaml").exists()


def test_exp_save_refuses_an_existing_file_or_a_bad_name(tmp_path, conf):
    params = compose(["model.optimizer.lr=0.01"], conf)
    with pytest.raises(ConfigError, match="exists already"):
        save("smoke", params, conf, lambda o: compose(o, conf))
    with pytest.raises(ConfigError, match=r"experiment name '\.\./x'"):
        save("../x", params, conf, lambda o: compose(o, conf))
