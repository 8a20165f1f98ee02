"""Your own network in two files: a package beside the library in src/ and a conf/model file.

In a copy of this repository: add src/acme_nets/ and conf/model/tiny.yaml, put `acme_nets.`
in allowed_targets, and `dvc exp run -S model=tiny` trains and judges it; the reference
server answers /predict with it. Editing the package makes exactly the stages that build
`_target_`s change; a `_target_` outside allowed_targets is refused at compose and at load.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request

import pytest
import yaml

from closedloop.serving.server import spawn
from tests.conftest import ROOT, make_project, run

NET = '''"""acme's networks."""

import torch
from torch import nn


class TinyNet(nn.Module):
    """One hidden layer of `width` units."""

    def __init__(self, in_features: int, out_features: int, width: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
'''

MODEL = """# acme's one-hidden-layer network (src/acme_nets/).
name: tiny # must equal this file's name
net:
  _target_: acme_nets.TinyNet # our class; `acme_nets.` is in allowed_targets
  width: 16 # hidden units
module:
  _target_: closedloop.training.module.LitClassifier # the library's training step
optimizer:
  _target_: torch.optim.AdamW # AdamW
  _partial_: true # the module passes the parameters
  lr: 0.01 # learning rate
  weight_decay: 0.0 # no weight decay
loss:
  _target_: torch.nn.CrossEntropyLoss # cross-entropy
batch_size: 32 # examples per optimiser step
"""

ALLOW = "  - torch.optim. # optimisers and schedulers (model.optimizer)\n"
BUILDERS = {"collect", "train", "evaluate", "drift"}  # the stages that build `_target_`s


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def exp_run(project) -> set[str]:
    return ran(run(["dvc", "exp", "run", "-S", "model=tiny"], project).stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("own-code"))
    (root / "src/acme_nets").mkdir()
    (root / "src/acme_nets/__init__.py").write_text(NET)
    (root / "conf/model/tiny.yaml").write_text(MODEL)
    config = root / "conf/config.yaml"
    assert ALLOW in config.read_text()
    config.write_text(config.read_text().replace(ALLOW, ALLOW + "  - acme_nets. # our networks\n"))
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "our own network"], root)
    return root, exp_run(root)


def test_own_network_trains_evaluates_and_is_served(project):
    project, first = project
    assert {"compose", "collect", "train", "evaluate", "gate"} <= first
    card = json.loads((project / "models/candidate/card.json").read_text())
    assert card["model"]["net"] == {"_target_": "acme_nets.TinyNet", "width": 16}
    assert card["parameters"] == (4 * 16 + 16) + (16 * 5 + 5)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert set(params["code"]) == {"acme_nets"}
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["production"]["n"] == 730 and 0 < metrics["production"]["accuracy"] <= 1

    # The server, as `make serve` starts it in this checkout: the copy's src/ stands in for
    # its own editable install (whose .pth puts src/ on the path, tests/unit/test_repo.py).
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    proc, url = spawn(["--no-logging"], cwd=project, env=env, timeout=90)
    try:
        body = json.dumps(
            {"features": {"precipitation": 0.0, "temp_max": 12.8, "temp_min": 5.0, "wind": 4.7}}
        ).encode()
        request = urllib.request.Request(
            f"{url}/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read())
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
            health = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answer["prediction"] in params["dataset"]["classes"]
    assert (
        answer["model_version"]
        == health["model_version"]
        == f"candidate-{card['weights_sha256'][:12]}"
    )


def test_editing_the_package_makes_exactly_the_stages_that_build_targets_change(project):
    """After the fixture's `dvc exp run` nothing is stale; editing the package reruns compose
    (it hashes src/) under the experiment, and then `dvc status` names exactly the stages that
    build `_target_`s, each for its `code` param: what the next `dvc exp run` reruns."""
    project, _ = project
    assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {}
    init = project / "src/acme_nets/__init__.py"
    init.write_text(init.read_text().replace('"""One hidden layer', '"""A single hidden layer'))
    out = run(["dvc", "exp", "run", "-S", "model=tiny", "compose"], project).stdout
    assert ran(out) == {"compose"}, out
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert set(status) == BUILDERS, status
    for stage, changes in status.items():
        assert changes == [{"changed deps": {"params.yaml": {"code": "modified"}}}], stage


def test_a_target_outside_allowed_targets_is_refused_at_compose_and_at_load(project):
    project, _ = project
    config = project / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - acme_nets. # our networks\n", ""))
    compose = run([sys.executable, "-m", "pipelines.compose", "model=tiny"], project, check=False)
    assert compose.returncode == 2
    lines = compose.stderr.strip().splitlines()
    assert len(lines) == 1, compose.stderr
    assert lines[0].startswith(
        "error: conf/model/tiny.yaml: model.net._target_: 'acme_nets.TinyNet' is not under "
        "allowed_targets"
    ), lines[0]

    # params.yaml back to the default model (allowed_targets without acme_nets.); the
    # candidate on disk is still TinyNet: loading it must refuse, in one line, naming it.
    # The experiment's params.yaml is discarded first, as compose's refusal tells a user to.
    run(["git", "checkout", "--", "params.yaml"], project)
    run([sys.executable, "-m", "pipelines.compose"], project)
    env = {"PYTHONPATH": f"{project / 'src'}{os.pathsep}{ROOT}"}
    serve = run(
        [sys.executable, "-m", "closedloop", "serve", "--no-logging", "--port", "1"],
        project,
        check=False,
        extra_env=env,
    )
    assert serve.returncode == 2, serve.stdout + serve.stderr
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1, serve.stderr
    assert lines[0].startswith(
        "error: models/candidate/config.json: model.net._target_: 'acme_nets.TinyNet' is not "
        "under allowed_targets"
    ), lines[0]
    run(["git", "checkout", "--", "."], project)
