"""Config: every option composes and instantiates; every bad config fails early in one line."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from closedloop.config import GROUPS, compose, dump, load_params, validate
from closedloop.data.snapshot import load_source, resolve_columns, split_frame
from closedloop.errors import ConfigError
from closedloop.models.nets import build_model
from closedloop.training.train import TRAINER_KEYS, make_trainer
from tests.conftest import ROOT

CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def instantiate(cfg: dict) -> None:
    """Build what a config describes: the dataset splits, the network and the Trainer."""
    ds = cfg["dataset"]
    if ds["source"] == "synthetic":
        ds = {**ds, "synthetic": {**ds["synthetic"], "n_samples": 300}}
    frame = load_source(ds)
    features, classes = resolve_columns(ds, frame)
    splits = split_frame(frame, ds, cfg["seed"])
    assert all(len(s) for s in splits.values())
    model = build_model(cfg["model"], len(features), len(classes))
    logits = model(torch.zeros(3, len(features)))
    assert logits.shape == (3, len(classes))
    t = cfg["trainer"]
    needs_gpu = t["accelerator"] in ("gpu", "cuda")
    if needs_gpu and not torch.cuda.is_available():
        # Can't construct a GPU Trainer here; check every key is a real Trainer argument.
        inspect.signature(L.Trainer).bind(**{k: t[k] for k in TRAINER_KEYS})
    else:
        make_trainer(t)


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_instantiates(group):
    assert options(group), f"conf/{group}/ is empty"
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "model" and option == "cnn":
            overrides.append("dataset=digits")  # a CNN needs image-shaped features
        cfg = compose(overrides, conf_dir=CONF)
        assert cfg[group]["name"] == option, (
            f"conf/{group}/{option}.yaml: name must equal the file name"
        )
        instantiate(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_instantiates(experiment):
    instantiate(compose([f"experiment={experiment}"], conf_dir=CONF))


def test_every_option_is_commented():
    """Every key in every config file has a comment on its line or the line above."""
    import re

    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#"), f"{path}: should open with a comment saying what it is"
        for i, line in enumerate(lines):
            if re.match(r"^\s*[A-Za-z_]\w*:", line) and not line.startswith("defaults:"):
                above = lines[i - 1].strip() if i else ""
                assert "#" in line or above.startswith("#"), (
                    f"{path}:{i + 1}: '{line.strip()}' has no comment"
                )


def test_params_yaml_is_the_canonical_composition_of_conf():
    """The committed params.yaml is exactly what compose writes for the committed conf/."""
    assert (ROOT / "params.yaml").read_text() == dump(compose([], conf_dir=CONF))


def test_dump_is_canonical_and_round_trips():
    cfg = compose(["dataset=digits", "model=cnn"], conf_dir=CONF)
    assert validate(yaml.safe_load(dump(cfg)), CONF) == cfg
    assert dump(cfg) == dump(validate(yaml.safe_load(dump(cfg)), CONF))


# ------------------------------------------------------------------------- bad configs
@pytest.fixture
def conf_copy(tmp_path):
    dest = tmp_path / "conf"
    shutil.copytree(CONF, dest)
    return dest


def edit(conf: Path, rel: str, old: str, new: str) -> None:
    path = conf / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new))


def one_line_error(conf: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        compose(list(overrides), conf_dir=conf)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_misspelt_key_in_yaml_names_key_and_file(conf_copy):
    edit(conf_copy, "dataset/seattle_weather.yaml", "strategy: time", "stratgy: time")
    msg = one_line_error(conf_copy)
    assert "dataset/seattle_weather.yaml" in msg
    assert "dataset.split.stratgy" in msg and "did you mean 'strategy'" in msg


def test_misspelt_key_in_model_file(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "weight_decay: 0.0001", "weight_decy: 0.0001")
    msg = one_line_error(conf_copy)
    assert "model/mlp.yaml" in msg and "model.weight_decy" in msg and "weight_decay" in msg


def test_misspelt_key_in_override_names_the_key(conf_copy):
    msg = one_line_error(conf_copy, ["model.lerning_rate=0.1"])
    assert "model.lerning_rate" in msg


def test_wrong_type_names_key_and_file(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "batch_size: 32", "batch_size: big")
    msg = one_line_error(conf_copy)
    assert "model/mlp.yaml" in msg and "model.batch_size" in msg and "'big'" in msg


def test_wrong_type_in_trainer_override(conf_copy):
    msg = one_line_error(conf_copy, ["trainer=cpu", "trainer.max_epochs=ten"])
    assert "trainer/cpu.yaml" in msg and "trainer.max_epochs" in msg


def test_unknown_dataset_lists_the_choices(conf_copy):
    msg = one_line_error(conf_copy, ["dataset=imagenet"])
    assert "unknown dataset 'imagenet'" in msg and "dataset/imagenet.yaml" in msg
    assert "seattle_weather" in msg and "digits" in msg


def test_unknown_dataset_source_in_yaml(conf_copy):
    edit(conf_copy, "dataset/digits.yaml", "source: digits", "source: mnist")
    msg = one_line_error(conf_copy, ["dataset=digits"])
    assert "dataset/digits.yaml" in msg and "dataset.source" in msg and "mnist" in msg


@pytest.mark.parametrize("value", ["-0.1", "0"])
def test_non_positive_learning_rate(conf_copy, value):
    msg = one_line_error(conf_copy, [f"model.lr={value}"])
    assert "model/mlp.yaml" in msg and "model.lr" in msg and "> 0" in msg


def test_overlapping_split_dates(conf_copy):
    edit(
        conf_copy,
        "dataset/seattle_weather.yaml",
        'val: { start: "2013-07-01"',
        'val: { start: "2013-06-01"',
    )
    msg = one_line_error(conf_copy)
    assert (
        "dataset/seattle_weather.yaml" in msg and "dataset.split.val" in msg and "overlaps" in msg
    )


def test_split_ending_before_it_starts(conf_copy):
    msg = one_line_error(conf_copy, ["dataset.split.production.end=2013-01-01"])
    assert "dataset.split.production" in msg and "before it starts" in msg


def test_malformed_date(conf_copy):
    msg = one_line_error(conf_copy, ["dataset.split.val.start=2013-13-01"])
    assert "dataset.split.val.start" in msg and "YYYY-MM-DD" in msg


def test_fractions_must_sum_to_one(conf_copy):
    msg = one_line_error(conf_copy, ["dataset=digits", "dataset.split.fractions.val=0.5"])
    assert "dataset.split.fractions" in msg and "sum to 1" in msg


def test_unknown_root_key_suggests_the_right_one(conf_copy):
    edit(conf_copy, "config.yaml", "seed: 42", "seed: 42\nsed: 1")
    msg = one_line_error(conf_copy)
    assert "config.yaml" in msg and "'sed'" in msg and "did you mean 'seed'" in msg


def test_unknown_experiment(conf_copy):
    msg = one_line_error(conf_copy, ["experiment=nope"])
    assert "experiment/nope.yaml" in msg and "smoke" in msg


def test_edited_params_yaml_is_revalidated(tmp_path):
    cfg = compose([], conf_dir=CONF)
    cfg["model"]["lr"] = -1.0
    (tmp_path / "params.yaml").write_text(dump(cfg))
    with pytest.raises(ConfigError, match=r"model\.lr"):
        load_params(tmp_path / "params.yaml")
