"""Networks, the Lightning module that trains them, and pickle-free save and load.

A saved model is a directory: ``model.safetensors`` (weights, including the input
standardisation) and ``config.json`` (everything needed to rebuild the network). Loading
never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipelines.io import atomic_path, sha256_file, write_json
from pipelines.paths import MODEL_CONFIG, WEIGHTS


class MLP(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden_sizes: list[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    def __init__(
        self,
        n_features: int,
        n_classes: int,
        input_shape: list[int],
        channels: list[int],
        kernel_size: int,
        hidden_size: int,
        dropout: float,
    ):
        super().__init__()
        c, h, w = input_shape
        if c * h * w != n_features:
            raise ValueError(
                f"model.input_shape {input_shape} holds {c * h * w} values but the dataset has "
                f"{n_features} features"
            )
        self.input_shape = (c, h, w)
        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(c * 4, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, *self.input_shape)))


class Classifier(nn.Module):
    """Standardise inputs with stored training statistics, then run the network."""

    def __init__(self, net: nn.Module, n_features: int):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set_standardisation(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(model_cfg: dict, n_features: int, n_classes: int) -> Classifier:
    """The network a model config describes, for this many features and classes."""
    arch = model_cfg["arch"]
    if arch == "mlp":
        net: nn.Module = MLP(
            n_features, n_classes, list(model_cfg["hidden_sizes"]), model_cfg["dropout"]
        )
    elif arch == "cnn":
        net = CNN(
            n_features,
            n_classes,
            list(model_cfg["input_shape"]),
            list(model_cfg["channels"]),
            model_cfg["kernel_size"],
            model_cfg["hidden_size"],
            model_cfg["dropout"],
        )
    else:
        raise ValueError(f"model.arch: unknown architecture {arch!r}")
    return Classifier(net, n_features)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class LitClassifier(L.LightningModule):
    """Cross-entropy training with AdamW.

    Per-step overhead is kept low (the benchmark holds it within 10% of a plain PyTorch
    loop): batches move to the device without Lightning's generic collection walk, and the
    training loss is summed on the device and logged once per epoch.
    """

    def __init__(self, model: Classifier, lr: float, weight_decay: float):
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = nn.CrossEntropyLoss()
        self.history: list[dict] = []  # one row per epoch: epoch, train_loss, val_loss, val_acc
        self._loss_sum = torch.zeros(())
        self._seen = 0

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
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


# ----------------------------------------------------------------- save and load
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
