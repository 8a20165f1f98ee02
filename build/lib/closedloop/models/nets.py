"""The built-in networks, and the wrapper that standardises their inputs.

A network is any ``nn.Module`` that ``model.net._target_`` names: closedloop calls it with
``in_features`` (the number of feature columns) and ``out_features`` (the number of
classes) plus its YAML arguments, and wraps it in :class:`Classifier`. The type hints of a
network's arguments are its config schema: compose checks the YAML against them.

Plain torch: serving and evaluation import this without Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import AfterValidator, Field
from torch import nn

from closedloop.errors import ConfigError
from closedloop.instantiate import instantiate

Width = Annotated[int, Field(ge=1)]
Dropout = Annotated[float, Field(ge=0, lt=1)]


def _odd(k: int) -> int:
    if k % 2 == 0:
        raise ValueError(f"must be a positive odd number, got {k}")
    return k


class MLP(nn.Module):
    """A multilayer perceptron: Linear, ReLU and Dropout per hidden layer, then Linear."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_sizes: list[Width],
        dropout: Dropout,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """A small CNN for image-shaped features: the flat vector is reshaped to input_shape."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        input_shape: Annotated[list[Width], Field(min_length=3, max_length=3)],
        channels: Annotated[list[Width], Field(min_length=1)],
        kernel_size: Annotated[Width, AfterValidator(_odd)],
        hidden_size: Width,
        dropout: Dropout,
    ):
        super().__init__()
        c, h, w = input_shape
        if c * h * w != in_features:
            raise ValueError(
                f"input_shape {list(input_shape)} holds {c * h * w} values but the dataset has "
                f"{in_features} features"
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
            nn.Linear(hidden_size, out_features),
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


def build_model(
    model_cfg: dict,
    n_features: int,
    n_classes: int,
    allowed: Sequence[str],
    where: str = "params.yaml",
) -> Classifier:
    """The network ``model.net`` names, for this many features and classes, standardised."""
    net = instantiate(
        model_cfg["net"],
        allowed,
        "model.net",
        where,
        in_features=n_features,
        out_features=n_classes,
    )
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"{where}: model.net: {model_cfg['net']['_target_']} returned "
            f"{type(net).__name__}, not a torch.nn.Module"
        )
    return Classifier(net, n_features)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
