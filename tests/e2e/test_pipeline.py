"""The DVC loop end to end, in a throwaway copy of this repository.

These run the real `dvc` commands a user runs. Training is cut to three epochs in the copy so
the time goes to what is under test: which stages rerun, determinism and experiments.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import make_project, run

ALL = {"compose", "collect", "champion", "train", "evaluate", "errors", "drift", "gate", "report"}
AFTER_TRAIN = {"train", "evaluate", "errors", "drift", "gate", "report"}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def outputs(project) -> dict:
    """Every DVC-tracked output's md5, from dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project copy after one full `dvc repro` (its metrics' bytes and outputs' md5s kept)."""
    root = make_project(tmp_path_factory.mktemp("project"))
    out = run(["dvc", "repro"], root).stdout
    assert ran(out) == ALL, out
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "first repro"], root)
    FIRST.update(metrics=(root / "reports/metrics.json").read_bytes(), outputs=outputs(root))
    return root


FIRST: dict = {}  # what the first repro wrote


def test_second_repro_runs_no_stage_and_status_is_clean(project):
    out = run(["dvc", "repro"], project).stdout
    assert ran(out) == set(), out
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status, status


def test_model_edit_reruns_train_and_evaluate_but_not_collect(project):
    edit(project / "conf/model/mlp.yaml", "lr: 0.003", "lr: 0.005")
    out = run(["dvc", "repro"], project).stdout
    assert ran(out) == {"compose"} | AFTER_TRAIN, out
    card = json.loads((project / "models/candidate/card.json").read_text())
    assert card["model"]["optimizer"]["lr"] == 0.005


def test_metrics_edit_reruns_only_evaluate(project):
    run(["dvc", "repro"], project)
    edit(project / "conf/metrics/default.yaml", "ece_bins: 15", "ece_bins: 10")
    out = run(["dvc", "repro"], project).stdout
    # evaluate reruns; downstream, only stages whose inputs actually changed may follow.
    assert (
        {"compose", "evaluate"} <= ran(out) <= {"compose", "evaluate", "errors", "gate", "report"}
    ), out


def test_dataset_edit_reruns_collect_and_everything_after(project):
    edit(project / "conf/dataset/seattle_weather.yaml", 'end: "2013-06-30"', 'end: "2013-05-31"')
    out = run(["dvc", "repro"], project).stdout
    assert ran(out) == ALL - {"champion"}, out
    run(["git", "checkout", "--", "conf"], project)  # the next test reruns it all, forced


def test_forced_reruns_give_byte_identical_metrics_and_artefacts(project):
    """Same inputs, same bytes: a forced rerun of every stage, after the edits above were
    undone, writes the first repro's metrics and every DVC-tracked output (the model
    directory and Evidently's HTML included), so a fresh `dvc repro` in CI reproduces the
    committed dvc.lock."""
    run(["dvc", "repro", "--force"], project)
    assert (project / "reports/metrics.json").read_bytes() == FIRST["metrics"]
    assert outputs(project) == FIRST["outputs"]
    assert {"models/candidate", "reports/drift.html"} <= set(FIRST["outputs"])
    assert json.loads(FIRST["metrics"])["production"]["n"] == 730


def test_bad_config_stops_the_loop_before_training(project):
    run(["git", "checkout", "--", "."], project)
    run(["dvc", "repro"], project)
    before = (project / "models/candidate/card.json").read_bytes()
    edit(project / "conf/model/mlp.yaml", "lr: 0.003", "lr: -0.003")
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert "conf/model/mlp.yaml: model.optimizer.lr: must be > 0" in proc.stderr
    assert ran(proc.stdout) == {"compose"}
    assert (project / "models/candidate/card.json").read_bytes() == before
    run(["git", "checkout", "--", "conf"], project)


def test_exp_run_group_and_value_overrides_train_and_are_listed(project):
    """One `dvc exp run` with a config group override (`experiment=`, which selects another
    dataset and model) and value overrides on top of it: Hydra composes them all."""
    run(["git", "checkout", "--", "."], project)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline", "--allow-empty"], project)
    run(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "lr-bump",
            "-S",
            "experiment=digits_cnn",
            "-S",
            "trainer.max_epochs=2",
            "-S",
            "model.optimizer.lr=0.02",
            "-S",
            "model.net.channels=[8,16]",
        ],
        project,
    )
    # The overrides reached training: the workspace now holds the experiment's results.
    card = json.loads((project / "models/candidate/card.json").read_text())
    assert card["dataset"] == "digits"
    model = card["model"]
    assert model["net"]["_target_"] == "closedloop.models.nets.CNN"
    assert model["optimizer"]["lr"] == 0.02 and model["net"]["channels"] == [8, 16]
    assert yaml.safe_load((project / "params.yaml").read_text())["model"]["optimizer"]["lr"] == 0.02
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    exps = {
        rev["name"]: rev["data"]
        for entry in shown
        for exp in entry.get("experiments") or []
        for rev in exp["revs"]
    }
    assert "lr-bump" in exps, exps.keys()
    assert exps["lr-bump"]["params"]["params.yaml"]["data"]["model"]["optimizer"]["lr"] == 0.02
    assert "reports/metrics.json" in exps["lr-bump"]["metrics"]
    # The workspace now holds the experiment, consistently: nothing to rerun.
    assert ran(run(["dvc", "repro"], project).stdout) == set()
    # A YAML edit would silently drop the experiment: repro refuses, in one line naming it and
    # both ways on; once the experiment is discarded, the edit recomposes and the override is gone.
    edit(project / "conf/model/mlp.yaml", "dropout: 0.1", "dropout: 0.2")
    refused = run(["dvc", "repro"], project, check=False)
    assert refused.returncode != 0
    assert "holds experiment lr-bump" in refused.stdout + refused.stderr
    assert "closedloop exp save lr-bump" in refused.stdout + refused.stderr
    run(["git", "checkout", "--", "params.yaml"], project)
    assert ran(run(["dvc", "repro", "compose"], project).stdout) == {"compose"}  # the rest: above
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"]["optimizer"]["lr"] == 0.003 and params["model"]["net"]["dropout"] == 0.2
    assert params["dataset"]["name"] == "seattle_weather"
    run(["git", "checkout", "--", "."], project)
