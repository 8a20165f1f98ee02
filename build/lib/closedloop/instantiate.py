"""Build what a `_target_` names (hydra.utils.instantiate), only under allowed_targets.

Every stage that calls this runs code a config names, possibly a user package in src/, so it
declares params ``allowed_targets`` and ``code`` in dvc.yaml (tests/stages/test_dvc_deps.py
checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from closedloop.config.targets import TARGET, check_allowed, resolve, target_nodes
from closedloop.errors import ClosedloopError, ConfigError


def instantiate(
    node: dict, allowed: Sequence[str], key: str, where: str = "params.yaml", **kwargs: Any
) -> Any:
    """Call the `_target_` of ``node`` (at ``key``, e.g. "model.net") with its arguments and
    ``kwargs``, after refusing any `_target_` in it outside ``allowed``. ``where`` names the
    file the node came from in errors (params.yaml, or a saved model's config.json)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    path = tuple(key.split("."))
    label = lambda _key: where  # noqa: E731
    check_allowed(node, allowed, label, path)
    for at, sub in target_nodes(node, path):
        resolve(sub[TARGET], allowed, (*at, TARGET), label)
    try:
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause: BaseException = e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ClosedloopError):
            raise cause from None
        text = str(cause).strip().splitlines()
        detail = text[0] if text else type(cause).__name__
        raise ConfigError(f"{where}: {key} ({node[TARGET]}): {detail}") from None
