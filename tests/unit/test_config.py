"""Config: every option composes and instantiates; every bad config fails early in one line."""

from __future__ import annotations

import inspect
import shutil
import typing
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from pydantic import BaseModel

from closedloop.config import GROUPS, compose, dump, load_params, validate
from closedloop.config import schema as schema_module
from closedloop.config.targets import target_nodes
from closedloop.data.snapshot import load_source, resolve_columns, split_frame
from closedloop.errors import ConfigError
from closedloop.models.encoding import Encoding, policies
from closedloop.models.nets import build_model
from closedloop.training.module import build_module
from closedloop.training.train import TRAINER_KEYS, make_trainer
from tests.conftest import ROOT

CONF = ROOT / "conf"
BUILT = {
    ("dataset", "source"),
    ("model", "net"),
    ("model", "module"),
    ("model", "optimizer"),
    ("model", "loss"),
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def instantiate(cfg: dict) -> None:
    """Build everything a config names: the source and its splits, the network, the module
    with its optimiser and loss, and the Trainer. Every `_target_` is one of these (nested
    ones are built by their parent)."""
    # model.loss: null is the task's own loss (closedloop.models.nets.TASK_LOSS)
    built = BUILT - ({("model", "loss")} if cfg["model"]["loss"] is None else set())
    assert {path for path, _ in target_nodes(cfg) if path[:2] in BUILT} == built
    assert all(path[:2] in BUILT for path, _ in target_nodes(cfg)), "a _target_ nobody builds"
    allowed = cfg["allowed_targets"]
    ds = cfg["dataset"]
    task = ds["task"]
    if ds["source"]["_target_"].endswith(".synthetic"):
        ds = {**ds, "source": {**ds["source"], "n_samples": 300}}
    frame = load_source(ds, allowed)
    numeric, categorical, classes = resolve_columns(ds, frame)
    if classes is None:  # learnt from the data
        classes = sorted(frame[ds["target"]].astype(str).unique())
    splits = split_frame(frame, ds, cfg["seed"])
    assert all(len(s) for s in splits.values())
    missing = policies(ds, [*numeric, *categorical])
    width = Encoding.fit(splits["train"], numeric, categorical, missing).width
    model = build_model(cfg["model"], width, len(classes), allowed, task=task)
    module = build_module(cfg["model"], model, allowed)
    assert isinstance(module, L.LightningModule) and module.model is model
    logits = module(torch.zeros(3, width))
    assert logits.shape == (3, len(classes) if task == "multiclass" else 1)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Optimizer)
    # The targets as collect's tensors() gives them to the task's loss.
    # (A binary target is 0 or 1: BCE of a target outside [0, 1] can be negative.)
    y = {
        "multiclass": torch.zeros(3, dtype=torch.long),
        "binary": torch.ones(3, 1),
        "regression": torch.full((3, 1), 7.0),
    }[task]
    assert float(module.loss(logits, y).detach()) > 0
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
        if group in ("slices", "gates") and option in options("dataset"):
            overrides.append(f"dataset={option}")  # they name the dataset's columns and metrics
        fallback = {"binary": "breast_cancer", "regression": "diabetes", "multiclass": "digits"}
        if (
            group == "gates" and option in fallback
        ):  # a task's gates, for datasets without their own
            overrides.append(f"dataset={fallback[option]}")
        cfg = compose(overrides, conf_dir=CONF)
        assert cfg[group]["name"] == option, (
            f"conf/{group}/{option}.yaml: name must equal the file name"
        )
        instantiate(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_instantiates(experiment):
    instantiate(compose([f"experiment={experiment}"], conf_dir=CONF))


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def test_the_schema_has_no_defaults_so_only_conf_sets_values():
    """One source of truth: every field of every schema model is required, so a value in
    params.yaml always comes from conf/ (or an override), never from code."""
    seen, todo, defaults = set(), [schema_module.Params], []
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not field.is_required():
                defaults.append(f"{model.__name__}.{name}")
            todo += _models(field.annotation)
    assert len(seen) > 15 and not defaults, defaults


def test_every_key_conf_sets_reaches_params_unchanged():
    """Nothing is added or dropped between conf/ and params.yaml but ``code``."""
    from closedloop.config.core import _hydra

    raw, _ = _hydra(CONF, [])
    cfg = compose([], conf_dir=CONF)
    assert {k: v for k, v in cfg.items() if k != "code"} == raw


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
    assert validate(yaml.safe_load(dump(cfg))) == cfg
    assert dump(cfg) == dump(validate(yaml.safe_load(dump(cfg))))


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
    assert "model/mlp.yaml" in msg and "model.optimizer.weight_decy" in msg
    assert "did you mean 'weight_decay'" in msg


def test_misspelt_network_argument_is_checked_against_its_signature(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "hidden_sizes: [64, 64]", "hidden_size: [64, 64]")
    msg = one_line_error(conf_copy)
    assert "model/mlp.yaml" in msg and "model.net.hidden_size" in msg
    assert "closedloop.models.nets.MLP" in msg and "did you mean 'hidden_sizes'" in msg


def test_misspelt_key_in_override_names_the_override_and_the_key(conf_copy):
    msg = one_line_error(conf_copy, ["model.lerning_rate=0.1"])
    assert "override 'model.lerning_rate=0.1'" in msg and "model.lerning_rate" in msg


def test_an_old_key_in_an_override_points_to_where_it_lives_now(conf_copy):
    msg = one_line_error(conf_copy, ["model.lr=0.1"])
    assert "unknown key 'model.lr'" in msg and "did you mean 'model.optimizer.lr'" in msg


def test_wrong_type_names_key_and_file(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "batch_size: 32", "batch_size: big")
    msg = one_line_error(conf_copy)
    assert "model/mlp.yaml" in msg and "model.batch_size" in msg and "'big'" in msg


def test_wrong_type_in_an_override_blames_the_override(conf_copy):
    msg = one_line_error(conf_copy, ["trainer=cpu", "trainer.max_epochs=ten"])
    assert msg.startswith("override 'trainer.max_epochs=ten': trainer.max_epochs:"), msg
    assert "'ten'" in msg and "trainer/" not in msg


def test_bad_value_in_an_experiment_is_blamed_on_the_experiment(conf_copy):
    """The value comes from conf/experiment/digits_cnn.yaml, not from trainer/default.yaml."""
    edit(conf_copy, "experiment/digits_cnn.yaml", "max_epochs: 15", "max_epochs: 0")
    msg = one_line_error(conf_copy, ["experiment=digits_cnn"])
    assert "experiment/digits_cnn.yaml: trainer.max_epochs: must be >= 1, got 0" in msg, msg


def test_bad_inherited_value_is_blamed_on_the_file_that_set_it(conf_copy):
    """trainer=cpu inherits max_epochs from trainer/default.yaml: that file is named."""
    edit(conf_copy, "trainer/default.yaml", "max_epochs: 40", "max_epochs: -4")
    msg = one_line_error(conf_copy, ["trainer=cpu"])
    assert "trainer/default.yaml: trainer.max_epochs" in msg and "cpu.yaml" not in msg, msg


def test_yaml_syntax_error_is_one_line_with_file_and_line(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "hidden_sizes: [64, 64]", "hidden_sizes: [64, 64")
    msg = one_line_error(conf_copy)
    lines = (conf_copy / "model/mlp.yaml").read_text().splitlines()
    bad = next(i for i, line in enumerate(lines, 1) if "hidden_sizes" in line)
    assert f"model/mlp.yaml:{bad + 1}:" in msg and "while parsing a flow sequence" in msg, msg


def test_unknown_dataset_lists_the_choices(conf_copy):
    msg = one_line_error(conf_copy, ["dataset=imagenet"])
    assert "unknown dataset 'imagenet'" in msg and "dataset/imagenet.yaml" in msg
    assert "seattle_weather" in msg and "digits" in msg


def test_unknown_dataset_source_in_yaml(conf_copy):
    edit(conf_copy, "dataset/digits.yaml", "sources.digits", "sources.mnist")
    msg = one_line_error(conf_copy, ["dataset=digits"])
    assert "dataset/digits.yaml" in msg and "dataset.source._target_" in msg and "mnist" in msg


def test_target_outside_allowed_targets_is_refused_at_compose(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "closedloop.models.nets.MLP", "acme_nets.TinyNet")
    msg = one_line_error(conf_copy)
    assert "model/mlp.yaml: model.net._target_: 'acme_nets.TinyNet' is not under" in msg
    assert "allowed_targets" in msg


def test_a_target_reached_through_an_allowed_module_is_judged_by_where_it_lives(conf_copy):
    """closedloop.models.nets imports torch, so this name reaches torch.load (which unpickles)."""
    edit(
        conf_copy,
        "model/mlp.yaml",
        "closedloop.models.nets.MLP",
        "closedloop.models.nets.torch.load",
    )
    msg = one_line_error(conf_copy)
    assert "model.net._target_" in msg and "torch.serialization.load" in msg and "not under" in msg


@pytest.mark.parametrize("value", ["-0.1", "0"])
def test_non_positive_learning_rate_in_an_override(conf_copy, value):
    msg = one_line_error(conf_copy, [f"model.optimizer.lr={value}"])
    assert f"override 'model.optimizer.lr={value}': model.optimizer.lr: must be > 0" in msg


def test_non_positive_learning_rate_in_yaml(conf_copy):
    edit(conf_copy, "model/mlp.yaml", "lr: 0.003", "lr: -0.1")
    msg = one_line_error(conf_copy)
    assert "model/mlp.yaml: model.optimizer.lr: must be > 0, got -0.1" in msg


def test_network_argument_constraint_from_its_type_hints(conf_copy):
    msg = one_line_error(conf_copy, ["model.net.dropout=1.5"])
    assert "model.net.dropout: must be < 1, got 1.5" in msg


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


def test_unknown_slice_kind_lists_the_kinds(conf_copy):
    edit(conf_copy, "slices/seattle_weather.yaml", "by: season", "by: seasn")
    msg = one_line_error(conf_copy)
    assert "slices/seattle_weather.yaml: slices.slices[0].by" in msg and "'month'" in msg


def test_unknown_root_key_suggests_the_right_one(conf_copy):
    edit(conf_copy, "config.yaml", "seed: 42", "seed: 42\nsed: 1")
    msg = one_line_error(conf_copy)
    assert "config.yaml" in msg and "'sed'" in msg and "did you mean 'seed'" in msg


def test_unknown_experiment(conf_copy):
    msg = one_line_error(conf_copy, ["experiment=nope"])
    assert "experiment/nope.yaml" in msg and "smoke" in msg


def test_edited_params_yaml_is_revalidated_and_blamed(tmp_path):
    cfg = compose([], conf_dir=CONF)
    cfg["model"]["optimizer"]["lr"] = -1.0
    (tmp_path / "params.yaml").write_text(dump(cfg))
    with pytest.raises(ConfigError, match=r"params\.yaml: model\.optimizer\.lr: must be > 0"):
        load_params(tmp_path / "params.yaml")


def test_params_yaml_with_a_target_outside_allowed_targets_is_refused(tmp_path):
    cfg = compose([], conf_dir=CONF)
    cfg["allowed_targets"] = ["closedloop.data.", "torch.nn.", "torch.optim."]
    (tmp_path / "params.yaml").write_text(dump(cfg))
    with pytest.raises(
        ConfigError, match=r"model\.net\._target_: 'closedloop\.models\.nets\.MLP' is not"
    ):
        load_params(tmp_path / "params.yaml")


def test_code_is_the_hash_of_each_user_package_and_changes_with_it(tmp_path):
    from closedloop.config.code import user_code

    (tmp_path / "closedloop").mkdir()
    (tmp_path / "closedloop/__init__.py").write_text("")
    (tmp_path / "closedloop.egg-info").mkdir()
    (tmp_path / "acme_nets/__pycache__").mkdir(parents=True)
    (tmp_path / "acme_nets/__init__.py").write_text("WIDTH = 8\n")
    (tmp_path / "acme_nets/__pycache__/x.pyc").write_bytes(b"bytecode")
    (tmp_path / "helpers.py").write_text("")
    first = user_code(tmp_path)
    assert sorted(first) == ["acme_nets", "helpers"], (
        "the library and build metadata are not user code"
    )
    (tmp_path / "acme_nets/__pycache__/x.pyc").write_bytes(b"other bytecode")
    assert user_code(tmp_path) == first
    (tmp_path / "acme_nets/__init__.py").write_text("WIDTH = 16\n")
    assert user_code(tmp_path)["acme_nets"] != first["acme_nets"]
    assert user_code(tmp_path)["helpers"] == first["helpers"]


def test_code_comes_from_compose_not_from_conf(conf_copy):
    edit(conf_copy, "config.yaml", "seed: 42", "seed: 42\ncode: {}")
    msg = one_line_error(conf_copy)
    assert "config.yaml" in msg and "'code' is written by compose" in msg


def test_under_dvc_exp_run_a_bad_value_is_blamed_on_the_overrides_or_on_its_file(
    tmp_path, conf_copy, monkeypatch
):
    """Under `dvc exp run` compose validates the params.yaml DVC composed (with the -S
    overrides, which compose never sees): a value conf/ alone would give is blamed on its
    file, any other on the overrides; and ``code`` is added."""
    from closedloop.config.core import _hydra, params_for_compose

    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    params = tmp_path / "params.yaml"

    def dvc_composes(overrides):  # what DVC writes before running the stages
        params.write_text(yaml.safe_dump(_hydra(conf_copy.resolve(), overrides)[0]))

    dvc_composes(["model=cnn", "dataset=digits"])
    cfg = params_for_compose(params=params, conf_dir=conf_copy)
    assert cfg["model"]["name"] == "cnn" and cfg["code"] == {}
    dvc_composes(["model.optimizer.lr=-1"])
    with pytest.raises(ConfigError) as info:
        params_for_compose(params=params, conf_dir=conf_copy)
    assert "composed by `dvc exp run` from conf/ and its -S overrides" in str(info.value)
    assert "model.optimizer.lr: must be > 0, got -1" in str(info.value)
    edit(conf_copy, "model/cnn.yaml", "batch_size: 64", "batch_size: 0")
    dvc_composes(["model=cnn", "dataset=digits"])
    with pytest.raises(ConfigError, match=r"model/cnn\.yaml: model\.batch_size: must be >= 1"):
        params_for_compose(params=params, conf_dir=conf_copy)
