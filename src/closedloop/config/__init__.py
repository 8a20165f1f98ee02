"""The config: Hydra composes conf/ into params.yaml, validated here with one-line errors."""

from closedloop.config.core import (
    compose,
    compose_params,
    dump,
    load_params,
    params_for_compose,
    under_experiment,
    validate,
)
from closedloop.config.schema import GROUPS, SPLITS
from closedloop.errors import ConfigError

__all__ = [
    "GROUPS",
    "SPLITS",
    "ConfigError",
    "compose",
    "compose_params",
    "dump",
    "load_params",
    "params_for_compose",
    "under_experiment",
    "validate",
]
