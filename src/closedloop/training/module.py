"""The LightningModule that trains a network, and how ``model.module`` is built.

``model.module._target_`` names the LightningModule; closedloop calls it with ``model`` (the
standardising Classifier, or Regressor, around ``model.net``; ``model.task`` says which
head), ``optimizer`` (``model.optimizer``, a partial that takes the parameters) and ``loss``
(``model.loss``, or the task's own when null: closedloop.models.nets.TASK_LOSS), plus its
YAML arguments.
Your own module subclasses LitClassifier (and keeps the per-epoch ``history`` the training
curve comes from) or is any LightningModule taking those three.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
from torch import nn

from closedloop.instantiate import instantiate
from closedloop.models.nets import TASK_LOSS, Classifier

# Attributes set on every training step that are never a parameter, buffer or submodule.
_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_loss_sum", "_seen"})


class LitClassifier(L.LightningModule):
    """Supervised training of a classifier with the configured optimiser and loss.

    Per-step overhead is kept low (the benchmark holds it within 10% of a plain PyTorch
    loop): batches move to the device without Lightning's generic collection walk, and the
    training loss is summed on the device and logged once per epoch.
    """

    def __init__(
        self,
        model: Classifier,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        loss: nn.Module,
    ):
        super().__init__()
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.history: list[dict] = []  # one row per epoch: epoch, train_loss, val_loss, val_acc
        self._loss_sum = torch.zeros(())
        self._seen = 0

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name around every hook it calls (some 45 times a step),
        # and the epoch sums change every step: these skip nn.Module.__setattr__'s search of
        # parameters, buffers and submodules, a few percent of a small net's step.
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        x, y = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._seen = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self.model(x), y)
        self._loss_sum += loss.detach() * len(y)
        self._seen += len(y)
        return loss

    # Lightning inspects training_step's signature on every step (to know whether to pass
    # batch_idx); a precomputed __signature__ (PEP 362) answers without the inspection.
    training_step.__signature__ = inspect.signature(training_step)

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self._loss_sum / max(self._seen, 1), sync_dist=True)
        row = {"epoch": self.current_epoch}
        for key in ("train_loss", "val_loss", "val_acc"):
            if key in self.trainer.callback_metrics:
                row[key] = round(float(self.trainer.callback_metrics[key]), 6)
        self.history.append(row)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", self.loss(logits, y), on_epoch=True, sync_dist=True)
        task = getattr(self.model, "task", "multiclass")
        if task == "regression":
            return
        said = logits.argmax(1) if task == "multiclass" else (logits > 0).to(y.dtype)
        self.log("val_acc", (said == y).float().mean(), on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())


def build_module(model_cfg: dict, model: Classifier, allowed: Sequence[str]) -> L.LightningModule:
    """``model.module`` around ``model``, with ``model.optimizer`` and ``model.loss`` (null:
    the loss of the model's task)."""
    loss_cfg = model_cfg["loss"] or {"_target_": TASK_LOSS[getattr(model, "task", "multiclass")]}
    loss = instantiate(loss_cfg, allowed, "model.loss")
    optimizer = instantiate(model_cfg["optimizer"], allowed, "model.optimizer")
    module = instantiate(
        model_cfg["module"], allowed, "model.module", model=model, optimizer=optimizer, loss=loss
    )
    if not isinstance(module, L.LightningModule):
        from closedloop.errors import ConfigError

        raise ConfigError(
            f"params.yaml: model.module: {model_cfg['module']['_target_']} returned "
            f"{type(module).__name__}, not a lightning.LightningModule"
        )
    return module
