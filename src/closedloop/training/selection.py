"""Which epoch ships: early stopping and the best checkpoint, as params `trainer.selection` says.

Lightning's ``EarlyStopping`` stops when the monitored validation metric stops improving, and
its ``ModelCheckpoint`` keeps the best epoch so far. The checkpoint is written by
``SafetensorsCheckpointIO`` into a temporary directory: the weights only, as safetensors (no
pickle, so nothing here ever unpickles), with the epoch and score in its metadata. After
``fit``, ``restore_best`` loads those weights back into the module, and the temporary
directory goes away: the shipped ``model.safetensors`` is the best epoch's weights.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from closedloop.errors import ConfigError

EXTENSION = ".safetensors"


class SafetensorsCheckpointIO(CheckpointIO):
    """Checkpoints as safetensors state dicts: weights, epoch and step; no optimiser state.

    Enough to restore the best epoch's weights, not to resume a run (``load_checkpoint``
    returns the weights alone), which is all model selection needs.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in checkpoint["state_dict"].items()}
        meta = {
            "epoch": str(checkpoint.get("epoch")),
            "global_step": str(checkpoint.get("global_step")),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp"
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return {"state_dict": load_file(str(path))}

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


@dataclass(frozen=True)
class Selected:
    """The epoch whose weights ship, and its value of the monitored metric."""

    epoch: int
    monitor: str
    score: float


def callbacks(selection: dict, dirpath: Path) -> tuple[ModelCheckpoint, list[L.Callback]]:
    """The best-epoch checkpoint (into ``dirpath``) and, unless patience is null, early stopping."""
    monitor, mode = selection["monitor"], selection["mode"]
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=False,
        save_weights_only=True,
        enable_version_counter=False,
    )
    best.FILE_EXTENSION = EXTENSION
    out: list[L.Callback] = [best]
    if selection["patience"] is not None:
        out.append(
            EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=selection["patience"],
                min_delta=selection["min_delta"],
                check_finite=True,
            )
        )
    return best, out


def fit(trainer: L.Trainer, module: L.LightningModule, train_dl, val_dl, monitor: str) -> None:
    """``trainer.fit``, with a monitored metric the module never logs as a one-line error."""
    try:
        trainer.fit(module, train_dl, val_dl)
    except Exception as e:  # EarlyStopping: RuntimeError; ModelCheckpoint: Misconfiguration
        text = str(e)
        if f"`{monitor}`" in text and "not available" in text:
            raise ConfigError(
                f"params.yaml: trainer.selection.monitor: {monitor!r} is not a metric the module "
                "logs during validation (the default module logs val_loss and val_acc)"
            ) from None
        raise


def restore_best(best: ModelCheckpoint, module: L.LightningModule) -> Selected:
    """Load the best checkpoint's weights into ``module``; which epoch it was and its score."""
    path = best.best_model_path
    if not path or not Path(path).exists():
        raise ConfigError(
            f"params.yaml: trainer.selection.monitor: no epoch was checkpointed on "
            f"{best.monitor!r} (was it ever finite?)"
        )
    with safe_open(path, framework="pt") as f:
        epoch = int(f.metadata()["epoch"])
    state = load_file(path, device=str(module.device))
    module.load_state_dict(state)
    score = best.best_model_score
    value = float(score) if isinstance(score, torch.Tensor) else math.nan
    return Selected(epoch=epoch, monitor=str(best.monitor), score=value)
