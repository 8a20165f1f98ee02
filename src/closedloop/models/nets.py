"""The built-in networks, and the wrapper that standardises their inputs.

A network is any ``nn.Module`` that ``model.net._target_`` names: closedloop calls it with
``in_features`` (the number of feature columns) and ``out_features`` (the size of the task's
output head: one logit per class for multiclass, one logit for binary, one value for
regression) plus its YAML arguments, and wraps it in :class:`Classifier` (or
:class:`Regressor`, which also standardises the target). The type hints of a
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


# The loss each task trains with when ``model.loss`` is null.
TASK_LOSS = {
    "multiclass": "torch.nn.CrossEntropyLoss",  # logits (n, k), class indices
    "binary": "torch.nn.BCEWithLogitsLoss",  # one logit (n, 1), 0/1 as float (n, 1)
    "regression": "torch.nn.MSELoss",  # one value (n, 1), the target (n, 1)
}


def head_size(task: str, n_classes: int) -> int:
    """out_features of the network: one logit per class, or one output."""
    return n_classes if task == "multiclass" else 1


class Classifier(nn.Module):
    """Standardise inputs with stored training statistics, then run the network."""

    task = "multiclass"  # which head: set by build_model, not saved (config.json says it)

    def __init__(self, net: nn.Module, n_features: int):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set_standardisation(self, x: torch.Tensor) -> None:
        """Training statistics; a column constant in train (an out-of-vocabulary slot, a
        blank pixel) is centred only, so a value seen first in production stays in scale."""
        std = x.std(0)
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class Regressor(Classifier):
    """A regression head: the network predicts the standardised target, scaled back here, so
    the loss is in target units while the network's outputs stay near unit scale."""

    task = "regression"

    def __init__(self, net: nn.Module, n_features: int):
        super().__init__(net, n_features)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def set_target_standardisation(self, y: torch.Tensor) -> None:
        self.target_mean.copy_(y.double().mean().float())
        self.target_std.copy_(y.double().std().float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.target_std + self.target_mean


def build_model(
    model_cfg: dict,
    n_features: int,
    n_classes: int,
    allowed: Sequence[str],
    where: str = "params.yaml",
    task: str = "multiclass",
) -> Classifier:
    """The network ``model.net`` names, for this many features and the task's output head
    (``n_classes`` is ignored for regression), standardised."""
    net = instantiate(
        model_cfg["net"],
        allowed,
        "model.net",
        where,
        in_features=n_features,
        out_features=head_size(task, n_classes),
    )
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"{where}: model.net: {model_cfg['net']['_target_']} returned "
            f"{type(net).__name__}, not a torch.nn.Module"
        )
    if task == "regression":
        return Regressor(net, n_features)
    model = Classifier(net, n_features)
    model.task = task
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
