"""Pickle-free save and load of a model directory, and batched prediction.

A saved model is a directory: ``model.safetensors`` (weights, including the input
standardisation) and ``config.json`` (the model config it was trained with, its features and
classes). Loading never unpickles anything, and instantiates only ``model.net``, only when
its `_target_` lies under allowed_targets: a model directory from elsewhere cannot make this
process run code the repository does not already trust.

Models saved before ``model.net`` existed say ``"model": {"arch": "mlp" | "cnn", ...}``;
they load as the same built-in network, so an old champion keeps being served and judged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from closedloop.errors import ConfigError
from closedloop.io import atomic_path, sha256_file, write_json
from closedloop.models.nets import Classifier, build_model
from closedloop.paths import MODEL_CONFIG, WEIGHTS

# What an old-format model config's ``arch`` meant, as today's network and its arguments.
LEGACY_NETS = {
    "mlp": ("closedloop.models.nets.MLP", ("hidden_sizes", "dropout")),
    "cnn": (
        "closedloop.models.nets.CNN",
        ("input_shape", "channels", "kernel_size", "hidden_size", "dropout"),
    ),
}


def save_model(model: Classifier, config: dict, out_dir: Path) -> str:
    """Write weights (safetensors) and config.json atomically; return the weights' sha256."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(out_dir / MODEL_CONFIG, config)
    return sha256_file(out_dir / WEIGHTS)


def upgrade_model_config(model_cfg: dict, where: str) -> dict:
    """An old-format model config (``arch``) as today's: the network it built, and the AdamW,
    LitClassifier and cross-entropy it was trained with. Today's configs pass unchanged."""
    if "arch" not in model_cfg:
        return model_cfg
    arch = model_cfg["arch"]
    if arch not in LEGACY_NETS:
        raise ConfigError(
            f"{where}: model.arch: unknown architecture {arch!r} (a model saved before "
            f"model.net existed is one of: {', '.join(LEGACY_NETS)})"
        )
    target, keys = LEGACY_NETS[arch]
    missing = [k for k in keys if k not in model_cfg]
    if missing:
        raise ConfigError(f"{where}: model: an {arch} model needs {missing}")
    return {
        "name": model_cfg.get("name", arch),
        "net": {"_target_": target, **{k: model_cfg[k] for k in keys}},
        "module": {"_target_": "closedloop.training.module.LitClassifier"},
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": model_cfg.get("lr"),
            "weight_decay": model_cfg.get("weight_decay"),
        },
        "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
        "batch_size": model_cfg.get("batch_size"),
    }


def read_model_config(model_dir: Path) -> dict:
    """config.json of a model directory, in today's format."""
    path = Path(model_dir) / MODEL_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no model here; run `dvc repro train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    for key in ("model", "features", "classes"):
        if key not in config:
            raise ConfigError(f"{path}: missing '{key}'")
    model_cfg = (
        upgrade_model_config(config["model"], str(path))
        if isinstance(config["model"], dict)
        else None
    )
    if not model_cfg or not isinstance(model_cfg.get("net"), dict):
        raise ConfigError(f"{path}: model.net: missing; nothing to build")
    return {**config, "model": model_cfg}


def load_model(model_dir: Path, allowed: Sequence[str]) -> tuple[Classifier, dict]:
    """Rebuild a saved model from config.json and safetensors weights (no pickle), building
    only a ``model.net`` whose `_target_` is under ``allowed`` (params ``allowed_targets``)."""
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    model = build_model(
        config["model"],
        len(config["features"]),
        len(config["classes"]),
        allowed,
        str(model_dir / MODEL_CONFIG),
    )
    try:
        model.load_state_dict(load_file(str(model_dir / WEIGHTS)), strict=True)
    except (RuntimeError, OSError) as e:
        raise ConfigError(
            f"{model_dir / WEIGHTS}: does not fit the network config.json describes "
            f"({str(e).strip().splitlines()[0]})"
        ) from None
    model.eval()
    return model, config


@torch.no_grad()
def predict_proba(model: nn.Module, x, batch_size: int = 8192) -> torch.Tensor:
    """Class probabilities for a float32 array, in batches, on the CPU."""
    x = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.softmax(model(x[i : i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0)
