"""The networks, and the wrapper that standardises their inputs.

Plain torch: serving and evaluation import this without Lightning.
"""

from __future__ import annotations

import torch
from torch import nn


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
