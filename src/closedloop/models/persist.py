"""Pickle-free save and load of a model directory, and batched prediction.

A saved model is a directory: ``model.safetensors`` (weights, including the input
standardisation) and ``config.json`` (everything needed to rebuild the network). Loading
never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from closedloop.io import atomic_path, sha256_file, write_json
from closedloop.models.nets import Classifier, build_model
from closedloop.paths import MODEL_CONFIG, WEIGHTS


def save_model(model: Classifier, config: dict, out_dir: Path) -> str:
    """Write weights (safetensors) and config.json atomically; return the weights' sha256."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(out_dir / MODEL_CONFIG, config)
    return sha256_file(out_dir / WEIGHTS)


def load_model(model_dir: Path) -> tuple[Classifier, dict]:
    """Rebuild a saved model from config.json and safetensors weights (no pickle)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / MODEL_CONFIG).read_text())
    model = build_model(config["model"], len(config["features"]), len(config["classes"]))
    model.load_state_dict(load_file(str(model_dir / WEIGHTS)), strict=True)
    model.eval()
    return model, config


@torch.no_grad()
def predict_proba(model: nn.Module, x, batch_size: int = 8192) -> torch.Tensor:
    """Class probabilities for a float32 array, in batches, on the CPU."""
    x = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.softmax(model(x[i : i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0)
