"""The CPU's numerical path: declared in conf/config.yaml, validated, and in the environment
before torch computes anything (the cross-CPU byte check is tests/e2e/test_reproducible.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from closedloop.config import compose, load_params
from closedloop.errors import ConfigError
from closedloop.numerics import environment
from tests.conftest import ROOT

CONF = ROOT / "conf"


def test_the_default_config_pins_mkl_aten_and_threads_and_stages_that_run_the_model_declare_it():
    numerics = compose(conf_dir=CONF)["numerics"]
    assert numerics == {
        "mkl_cbwr": "COMPATIBLE",
        "aten_cpu_capability": "default",
        "intra_op_threads": 1,
    }
    assert environment(numerics) == {
        "MKL_CBWR": "COMPATIBLE",
        "ATEN_CPU_CAPABILITY": "default",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("train", "evaluate", "drift"):
        assert "numerics" in stages[name]["params"], f"stage {name} runs the model"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "numerics.mkl_cbwr=AVX3",
            "override 'numerics.mkl_cbwr=AVX3': numerics.mkl_cbwr: unknown MKL branch 'AVX3'",
        ),
        (
            "numerics.aten_cpu_capability=fast",
            "numerics.aten_cpu_capability: unknown capability 'fast'",
        ),
        ("numerics.intra_op_threads=0", "numerics.intra_op_threads: must be an integer >= 1"),
        (
            "+numerics.inter_op_threads=2",
            "override '+numerics.inter_op_threads=2': unknown key 'numerics.inter_op_threads'",
        ),
    ],
)
def test_a_bad_numerics_setting_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        compose([override], conf_dir=CONF)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_null_leaves_a_setting_to_the_machine():
    numerics = compose(["numerics.intra_op_threads=null", "numerics.mkl_cbwr=null"], conf_dir=CONF)
    assert environment(numerics["numerics"]) == {"ATEN_CPU_CAPABILITY": "default"}


def probe(cwd, env: dict) -> dict:
    """What a fresh `python -m pipelines.<stage>` process runs with, asked after torch computed."""
    code = (
        "import pipelines, json, os, torch\n"
        "x = torch.randn(64, 64); (x @ x).sum()\n"
        "from closedloop.numerics import mkl_started_unpinned\n"
        "print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(),\n"
        "  'threads': torch.get_num_threads(), 'mkl': os.environ.get('MKL_CBWR'),\n"
        "  'mkl_unpinned': mkl_started_unpinned()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_importing_pipelines_pins_params_numerics_before_torch_computes(tmp_path):
    """Whatever the caller's environment says, a stage runs on params.yaml's path."""
    params = load_params(ROOT / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    hostile = {"PATH": "/usr/bin:/bin", "MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "avx512"}
    got = probe(tmp_path, {**hostile, "OMP_NUM_THREADS": "2"})
    assert got == {
        "capability": "DEFAULT",
        "threads": 1,
        "mkl": "COMPATIBLE",
        "mkl_unpinned": False,
    }


def test_without_params_numerics_the_machine_decides(tmp_path):
    got = probe(tmp_path, {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert got["threads"] == 2 and got["mkl"] is None
    assert got["mkl_unpinned"] or sys.platform != "linux"  # torch's MKL, asked through ctypes


def one_step(overrides: list[str], in_features: int, classes: int, fused: bool | None = None):
    """One training step (forward, backward, optimiser) of a composed model, watched for
    MKL's vector math; the VML-backed ops it ran."""
    import torch

    from closedloop.models.nets import build_model
    from closedloop.numerics import vector_math_watch
    from closedloop.training.module import build_module

    params = compose(overrides, conf_dir=CONF)
    if fused is not None:
        params["model"]["optimizer"]["fused"] = fused
    torch.manual_seed(0)
    net = build_model(params["model"], in_features, classes, params["allowed_targets"])
    x, y = torch.randn(32, in_features), torch.randint(0, classes, (32,))
    net.set_standardisation(x)
    lit = build_module(params["model"], net, params["allowed_targets"])
    opt = lit.configure_optimizers()
    with vector_math_watch() as watch:
        for _ in range(2):  # Adam's moments are made at the first step, used at the second
            opt.zero_grad()
            lit.loss(lit.model(x), y).backward()
            opt.step()
    return watch.seen


@pytest.mark.parametrize(
    ("overrides", "in_features", "classes"),
    [([], 12, 5), (["experiment=digits_cnn"], 64, 10)],
    ids=["mlp", "cnn"],
)
def test_the_shipped_models_train_without_mkl_vector_math(overrides, in_features, classes):
    """MKL's vector math picks its kernel by CPU whatever MKL_CBWR says (an AMD EPYC and an
    emulated Intel CPU trained other weights through AdamW's per-tensor sqrt)."""
    assert one_step(overrides, in_features, classes) == set()


def test_the_watch_sees_the_per_tensor_adamw_sqrt():
    assert one_step([], 12, 5, fused=False) == {"sqrt"}


def test_training_warns_when_the_model_runs_mkl_vector_math(tmp_path, drift_project, monkeypatch):
    """The pinned numerics cannot keep such weights the same on another CPU: train says so,
    and says nothing for the shipped config."""
    import warnings

    from closedloop import numerics
    from closedloop.paths import SNAPSHOT_DIR
    from closedloop.training.train import train

    snapshot = drift_project[0] / SNAPSHOT_DIR
    monkeypatch.chdir(tmp_path)  # train writes reports/train/ under the working directory
    monkeypatch.setattr(numerics, "_warned", set())  # each message is said once per process
    params = compose(["trainer=cpu", "trainer.max_epochs=1"], conf_dir=CONF)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="numerics: training")
        train(params, snapshot, tmp_path / "fused")
    params["model"]["optimizer"]["fused"] = False
    with pytest.warns(RuntimeWarning, match=r"numerics: training ran torch\.sqrt .*vector math"):
        train(params, snapshot, tmp_path / "per-tensor")
