"""The one bridge from conf/ (Hydra) to params.yaml (DVC), and its validation.

Hydra composes conf/ into a plain tree; the pydantic schema (closedloop.config.schema, no
defaults) checks it; every `_target_` is checked against allowed_targets and its callable's
signature. Any failure is one line that names the key and the file that set the value (a
group file, an experiment, or the command-line override), before any work.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from closedloop.config import experiments
from closedloop.config.code import user_code
from closedloop.config.messages import describe
from closedloop.config.provenance import Origins, get, rel
from closedloop.config.schema import GROUPS, Params
from closedloop.config.targets import check_allowed, check_targets, dotted
from closedloop.errors import ConfigError, ConfigRuleError
from closedloop.paths import CONF_DIR, PARAMS

Where = Callable[[tuple], str]
DEFAULT_SLICES = "default"  # conf/slices/default.yaml: for a dataset without slices of its own


# ----------------------------------------------------------------------- composition
def compose(overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> dict:
    """Compose conf/ with Hydra overrides into a validated plain dict, ``code`` included."""
    conf_dir = Path(conf_dir).resolve()
    raw, origins = _hydra(conf_dir, list(overrides))
    if "code" in raw:
        raise ConfigError(f"{origins(('code',))}: 'code' is written by compose; remove it")
    raw["code"] = user_code(conf_dir.parent / "src")
    return check(raw, origins)


def check(raw: dict, where: Where) -> dict:
    """Validate a composed config and every `_target_` in it (imports them: compose only)."""
    cfg = validate(raw, where)
    check_targets(cfg, cfg["allowed_targets"], where)
    return cfg


def _hydra(conf_dir: Path, overrides: list[str]) -> tuple[dict, Origins]:
    """Hydra's composition as a plain dict, and who set each key; Hydra's errors in one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
            fallback = []  # the dataset has no conf/slices/ or conf/gates/<name>.yaml of its own
            if "slices" not in cfg:
                fallback.append(f"slices={DEFAULT_SLICES}")
            if "gates" not in cfg and isinstance(cfg.get("dataset"), dict | DictConfig):
                fallback.append(f"gates={cfg['dataset'].get('task')}")  # gates/<task>.yaml
            if fallback:
                overrides = [*overrides, *fallback]
                cfg = hydra_compose(config_name="config", overrides=overrides)
            origins = Origins.from_hydra(conf_dir, "config", overrides)
        raw = OmegaConf.to_container(cfg, resolve=True)
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e, conf_dir)) from None
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_message(e, conf_dir)) from None
    except ConfigCompositionException as e:
        raise ConfigError(_override_message(e, conf_dir, overrides)) from None
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = f" ({lines[-1]})" if len(lines) > 1 else ""
        raise ConfigError(f"{rel(conf_dir)}: {lines[0]}{detail}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{rel(conf_dir)}/config.yaml: the config must be a mapping")
    return raw, origins


def _missing_option_message(e: Exception, conf_dir: Path) -> str:
    """Turn Hydra's multi-line 'Could not find' into one line listing the valid options."""
    text = str(e)
    for group in (*GROUPS, "experiment"):
        marker = f"'{group}/"
        if marker in text:
            option = text.split(marker, 1)[1].split("'", 1)[0]
            valid = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
            return (
                f"unknown {group} '{option}': {rel(conf_dir)}/{group}/{option}.yaml does not exist "
                f"(choose from: {', '.join(valid)})"
            )
    return text.strip().splitlines()[0]


def _yaml_message(e: yaml.YAMLError, conf_dir: Path) -> str:
    """A YAML syntax error as file:line: problem."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return f"{rel(conf_dir)}: not valid YAML ({str(e).splitlines()[0]})"
    problem = getattr(e, "problem", None) or "not valid YAML"
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    where = f" ({context} at line {cmark.line + 1})" if context and cmark is not None else ""
    return f"{rel(Path(mark.name))}:{mark.line + 1}: {problem}{where}"


def _override_message(e: Exception, conf_dir: Path, overrides: list[str]) -> str:
    """An override of a key no config file has: name it and suggest the key it resembles."""
    text = str(e)
    found = re.search(
        r"Could not (?:override|append to config\.?|delete from config)[^']*'([^']+)'", text
    )
    if not found:
        return f"{rel(conf_dir)}: {text.strip().splitlines()[0]}"
    key = found.group(1)
    line = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), key)
    path = tuple(key.split("."))
    groups = [o for o in overrides if "." not in o.split("=", 1)[0] and "=" in o]
    try:
        raw, _ = _hydra(conf_dir, groups)  # conf/ with only the group choices
    except ConfigError:
        raw = {}
    node = get(raw, path[:-1], None)
    hint = _suggest(path[-1], set(node) if isinstance(node, dict) else set())
    if not hint:  # the same key elsewhere in its group: model.lr -> model.optimizer.lr
        same = [p for p in _paths(raw.get(path[0]), path[:1]) if p[-1] == path[-1]]
        hint = f" (did you mean '{dotted(same[0])}'?)" if same else ""
    return f"override '{line}': unknown key '{key}'{hint}"


def _paths(tree: Any, path: tuple) -> list[tuple]:
    """Every key path in a tree of mappings, depth first."""
    if not isinstance(tree, dict):
        return []
    out = []
    for key, value in tree.items():
        out += [(*path, key), *_paths(value, (*path, key))]
    return out


def _suggest(key: str, choices: set[str] | Any) -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ------------------------------------------------------------------------ validation
def validate(raw: Any, where: Where | None = None) -> dict:
    """Check a composed config against the schema and allowed_targets; return it as a dict.

    ``where`` names the file that set a key path (default: "the config").
    """
    where = where or (lambda path: "the config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where(())}: the config must be a mapping, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_message(e.errors()[0], raw, where)) from None
    cfg = params.model_dump(by_alias=True)
    check_allowed(cfg, cfg["allowed_targets"], where)
    return cfg


def _message(err: dict, raw: dict, where: Where) -> str:
    """One pydantic error as 'file: key: what is wrong', blamed on the file that set it."""
    loc = _clean(tuple(err["loc"]), raw, err["type"])
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, ConfigRuleError):
        loc = (*loc, *error.key.split("."))
    if err["type"] == "union_tag_invalid":
        ctx = err["ctx"]
        loc = (*loc, ctx["discriminator"].strip("'"))
        return (
            f"{where(loc)}: {dotted(loc)}: must be one of {ctx['expected_tags']}, "
            f"got {ctx['tag']!r}"
        )
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc[-1], _fields_at(loc[:-1]))
        return f"{where(loc)}: unknown key '{dotted(loc)}'{hint}"
    if err["type"] == "missing":
        node = get(raw, loc[:-1], None)
        known = _fields_at(loc[:-1])
        strays = [k for k in node if k not in known] if isinstance(node, dict) else []
        close = difflib.get_close_matches(str(loc[-1]), strays, n=1)
        if close:
            stray = (*loc[:-1], close[0])
            return f"{where(stray)}: unknown key '{dotted(stray)}' (did you mean '{loc[-1]}'?)"
    return f"{where(loc)}: {dotted(loc)}: {describe(err)}"


def _clean(loc: tuple, raw: dict, kind: str) -> tuple:
    """pydantic's error location as a key path: without union tags or '[key]' markers."""
    out: list = []
    node: Any = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if part == "[key]":
            continue
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if -len(node) <= part < len(node) else None
        elif last and kind in ("missing", "extra_forbidden"):
            out.append(part)
        # anything else is a union member's tag, not a key
    return tuple(out)


def _fields_at(path: tuple) -> set[str]:
    """The keys the schema allows at a key path (union members' keys together)."""
    models: list[type[BaseModel]] = [Params]
    for part in path:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            for name, f in m.model_fields.items():
                if part in (name, f.alias):
                    nxt += _models_in(f.annotation)
        models = nxt
    return {f.alias or name for m in models for name, f in m.model_fields.items()}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


# ------------------------------------------------------------------ params.yaml I/O
HEADER = (
    "# Generated from conf/ by `python -m pipelines.compose` (the `compose` stage of dvc.yaml).\n"
    "# Do not edit: change conf/ and run `dvc repro`, or `dvc exp run -S key=value`.\n"
)


def dump(cfg: dict, experiment: str | None = None) -> str:
    """The canonical text of params.yaml: the same config always gives the same bytes.
    ``experiment``: the `dvc exp run` it was composed for, when conf/ alone differs."""
    head = HEADER + (experiments.marker(experiment) if experiment else "")
    return head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"{path}: not found; run `dvc repro` (or `python -m pipelines.compose`)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: not valid YAML ({problem})") from None


def load_params(path: Path = PARAMS) -> dict:
    """Read and re-validate params.yaml: every stage trusts nothing it did not check."""
    path = Path(path)
    return validate(_read_yaml(path), lambda key: str(path))


def under_experiment() -> bool:
    """True inside `dvc exp run`, where DVC has already composed params.yaml."""
    return bool(os.environ.get("DVC_EXP_NAME"))


def params_for_compose(
    overrides: list[str] | tuple[str, ...] = (), params: Path = PARAMS, conf_dir: Path = CONF_DIR
) -> dict:
    """What the compose stage writes: under `dvc exp run`, the params.yaml DVC just composed
    with the -S overrides (validated, with ``code`` added; recomposing would drop them);
    otherwise conf/ composed."""
    params = Path(params)
    if not (under_experiment() and not overrides and params.exists()):
        return compose(overrides, conf_dir)
    raw = _read_yaml(params)
    if not isinstance(raw, dict):
        raise ConfigError(f"{params}: the config must be a mapping")
    for group, option in (
        ("slices", DEFAULT_SLICES),
        ("gates", raw.get("dataset", {}).get("task")),
    ):
        if group not in raw:  # DVC composed a dataset without its own file in this group
            path = Path(conf_dir) / group / f"{option}.yaml"
            raw[group] = yaml.safe_load(path.read_text(encoding="utf-8"))
    conf_dir = Path(conf_dir).resolve()
    raw["code"] = user_code(conf_dir.parent / "src")
    return check(raw, _experiment_origins(conf_dir, raw, params))


def compose_params(
    overrides: list[str] | tuple[str, ...] = (), params: Path = PARAMS, conf_dir: Path = CONF_DIR
) -> str:
    """The text the compose stage writes to params.yaml.

    Under `dvc exp run`, params that differ from conf/ alone are marked with the experiment's
    name; under `dvc repro`, a marked params.yaml that conf/ does not compose to is refused,
    not silently replaced (closedloop.config.experiments)."""
    params = Path(params)
    cfg = params_for_compose(overrides, params, conf_dir)
    if overrides:
        return dump(cfg)
    if under_experiment():
        differs = cfg != compose([], conf_dir)
        return dump(cfg, os.environ["DVC_EXP_NAME"] if differs else None)
    if experiments.marked_experiment(params):
        try:
            existing = load_params(params)
            existing["code"] = cfg["code"]
        except ConfigError:
            existing = None
        experiments.refuse_to_drop(params, existing, cfg)
    return dump(cfg)


def _experiment_origins(conf_dir: Path, raw: dict, params: Path) -> Where:
    """Blame for a params.yaml DVC composed: a conf/ file where conf/ alone (with the groups
    the params name) gives the same value, else the -S overrides. Composed only on an error."""
    label = f"{params} (composed by `dvc exp run` from conf/ and its -S overrides)"
    missing = object()

    @functools.cache
    def conf() -> tuple[dict, Origins] | None:
        choices = [
            f"{g}={raw[g]['name']}"
            for g in GROUPS
            if isinstance(raw.get(g), dict)
            and isinstance(raw[g].get("name"), str)
            and (conf_dir / g / f"{raw[g]['name']}.yaml").is_file()
        ]
        try:
            return _hydra(conf_dir, choices)
        except ConfigError:
            return None

    def where(key: tuple) -> str:
        here, composed = get(raw, key, missing), conf()
        if composed is None or here is missing or get(composed[0], key, missing) != here:
            return label
        return composed[1](key)

    return where
