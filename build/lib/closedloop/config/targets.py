"""`_target_`s: which callables a config may name (allowed_targets), and what they accept.

A `_target_` is a dotted path Hydra imports and calls. conf/config.yaml's ``allowed_targets``
lists the module prefixes it may point into. Compose refuses any other, and so does loading a
saved model, so a model directory from elsewhere can only build the networks this repository
trusts: its weights stay data, not code.

The prefix is checked twice: on the name as written, and on where the object really lives
(``__module__``), so ``closedloop.models.nets.torch.load`` (torch.load, reached through a
module that imports torch) is refused even though its name starts with an allowed prefix.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from closedloop.config.messages import describe
from closedloop.errors import ConfigError

TARGET = "_target_"
# Arguments closedloop passes itself when it calls a target, so the YAML must not set them.
SUPPLIED = {
    ("model", "net"): ("in_features", "out_features"),
    ("model", "module"): ("model", "optimizer", "loss"),
    ("model", "optimizer"): ("params",),
}
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")

Where = Callable[[tuple], str]


def dotted(path: tuple) -> str:
    """('slices', 'slices', 0, 'by') -> 'slices.slices[0].by'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def is_allowed(name: str, prefixes: Sequence[str]) -> bool:
    """Whether a dotted name lies under one of the prefixes ("torch.nn." or "torch.nn")."""
    for p in prefixes:
        base = p.rstrip(".")
        if name == base or name.startswith(base + "."):
            return True
    return False


def target_nodes(tree: Any, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every mapping with a `_target_` in a config tree, outermost first, with its path."""
    if isinstance(tree, dict):
        if TARGET in tree:
            yield path, tree
        for key, value in tree.items():
            yield from target_nodes(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from target_nodes(value, (*path, i))


def check_allowed(tree: Any, prefixes: Sequence[str], where: Where, path: tuple = ()) -> None:
    """Refuse, in one line, the first `_target_` in ``tree`` that is not under ``prefixes``."""
    for at, node in target_nodes(tree, path):
        name = node[TARGET]
        key = (*at, TARGET)
        if not isinstance(name, str) or not is_allowed(name, prefixes):
            raise ConfigError(
                f"{where(key)}: {dotted(key)}: {name!r} is not under allowed_targets "
                f"({', '.join(prefixes)}) in conf/config.yaml"
            )


def locate(name: str) -> Any:
    """The object a dotted path names, as Hydra finds it: the longest importable module
    prefix, then attributes. Raises ImportError with a one-line reason."""
    parts = name.split(".")
    if not all(parts):
        raise ImportError(f"{name!r} is not a dotted path")
    obj, found = None, 0
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj, found = importlib.import_module(module), i
            break
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise ImportError(f"importing {module} failed: {e}") from None
        except Exception as e:  # the module exists but fails to import (a user's bug)
            raise ImportError(f"importing {module} failed: {type(e).__name__}: {e}") from None
    if obj is None:
        raise ImportError(f"no module named {parts[0]!r}")
    for i in range(found, len(parts)):
        if not hasattr(obj, parts[i]):
            where = ".".join(parts[:i])
            close = difflib.get_close_matches(
                parts[i], [n for n in dir(obj) if not n.startswith("_")], n=1
            )
            hint = f"; did you mean '{where}.{close[0]}'?" if close else ""
            raise ImportError(f"{where} has no {parts[i]!r}{hint}")
        obj = getattr(obj, parts[i])
    return obj


def resolve(name: str, prefixes: Sequence[str], key: tuple, where: Where) -> Any:
    """Import what a `_target_` names; refuse it unless it really lives under ``prefixes``."""
    try:
        obj = locate(name)
    except ImportError as e:
        raise ConfigError(f"{where(key)}: {dotted(key)}: cannot import {name!r} ({e})") from None
    home = f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '')}"
    if not is_allowed(home, prefixes):
        raise ConfigError(
            f"{where(key)}: {dotted(key)}: {name!r} is {home}, which is not under "
            f"allowed_targets ({', '.join(prefixes)}) in conf/config.yaml"
        )
    if not callable(obj):
        raise ConfigError(f"{where(key)}: {dotted(key)}: {name!r} is not callable")
    return obj


def check_targets(tree: Any, prefixes: Sequence[str], where: Where, path: tuple = ()) -> None:
    """Compose-time check of every `_target_`: allowed, importable, and its YAML arguments
    accepted by its signature (names, types, and constraints the callable's annotations
    declare), so a typo fails in seconds rather than after collect."""
    check_allowed(tree, prefixes, where, path)
    for at, node in target_nodes(tree, path):
        obj = resolve(node[TARGET], prefixes, (*at, TARGET), where)
        check_arguments(obj, node, at, where)


def check_arguments(obj: Any, node: dict, path: tuple, where: Where) -> None:
    """The node's arguments against ``obj``'s signature, through a pydantic model of it."""
    if "_args_" in node:
        return  # positional arguments: leave binding to the call
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check against
    supplied = set(SUPPLIED.get(path, ()))
    partial = node.get("_partial_") is True
    args = {k: v for k, v in node.items() if k not in HYDRA_KEYS}
    hints = _hints(obj)
    fields: dict[str, Any] = {}
    extra = "forbid"
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            extra = "allow"
            continue
        if p.kind is p.VAR_POSITIONAL or p.name in supplied:
            continue
        nested = isinstance(args.get(p.name), dict) and TARGET in args[p.name]
        annotation = Any if nested else _usable(hints.get(p.name, Any))
        required = p.default is p.empty and not partial
        fields[p.name] = (annotation, ... if required else None)
    clash = sorted(supplied & set(args))
    if clash:
        key = (*path, clash[0])
        raise ConfigError(
            f"{where(key)}: {dotted(key)}: closedloop passes it when it calls {node[TARGET]}; "
            "remove it from the YAML"
        )
    model = create_model(
        "Arguments",
        __config__=ConfigDict(extra=extra, arbitrary_types_allowed=True),
        **fields,
    )
    try:
        model.model_validate(args)
    except ValidationError as e:
        errors = e.errors()
        # A misspelt argument shows up as missing (the right name) and extra (the typo):
        # name the typo.
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        loc = (*path, *err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where(loc)}: unknown key '{dotted(loc)}': {node[TARGET]} takes no such "
                f"argument{hint}"
            ) from None
        raise ConfigError(f"{where(loc)}: {dotted(loc)}: {describe(err)}") from None


def _hints(obj: Any) -> dict:
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable annotations (forward refs, TYPE_CHECKING imports)
        return {}


def _usable(annotation: Any) -> Any:
    """The annotation when pydantic can validate with it, else Any."""
    try:
        create_model("Probe", __config__=_ARBITRARY, value=(annotation, ...))
    except Exception:  # a type pydantic cannot build a validator for
        return Any
    return annotation


_ARBITRARY = ConfigDict(arbitrary_types_allowed=True)
