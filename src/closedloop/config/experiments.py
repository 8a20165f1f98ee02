"""Experiments that survive: a params.yaml from `dvc exp run -S ...` is never silently dropped.

`dvc exp run` composes conf/ plus its -S overrides into params.yaml; `dvc exp apply <name>`
restores that params.yaml, and only it, not conf/. The next `dvc repro` would recompose
conf/ and drop the experiment without a word. So:

- under `dvc exp run`, when the params differ from what conf/ alone composes to, compose
  marks params.yaml with a comment line naming the experiment (``# experiment: <name> ...``);
- under `dvc repro`, compose refuses, in one line, to replace a marked params.yaml with a
  different composition of conf/;
- `closedloop exp save <name>` writes the experiment's difference from conf/ into
  conf/experiment/<name>.yaml (group choices as `override /group: choice`, then every
  changed key, each with a comment giving conf/'s value) and selects it in conf/config.yaml,
  so conf/ composes to exactly that params.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from closedloop.config.provenance import rel
from closedloop.config.schema import GROUPS
from closedloop.errors import ConfigError

MARKER = "# experiment: "
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SELECTED = re.compile(r"^(\s*-\s*experiment:\s*)(\S+)(.*)$", re.MULTILINE)


def marker(name: str) -> str:
    """The comment line compose writes at the top of an experiment's params.yaml."""
    return (
        f"{MARKER}{name} (conf/ plus `dvc exp run -S` overrides): "
        f"`closedloop exp save {name}` writes it into conf/\n"
    )


def marked_experiment(params: Path) -> str | None:
    """The experiment a params.yaml was composed for, from its marker line; None if unmarked."""
    try:
        with Path(params).open(encoding="utf-8", errors="replace") as f:
            head = [f.readline() for _ in range(4)]
    except FileNotFoundError:
        return None
    for line in head:
        if line.startswith(MARKER):
            return line[len(MARKER) :].split(" ", 1)[0].strip() or None
    return None


def refuse_to_drop(params: Path, existing: Any, composed: dict) -> None:
    """Stop a `dvc repro` that would replace an experiment's params.yaml with conf/'s."""
    name = marked_experiment(params)
    if name is None or existing == composed:
        return
    keys = diff_keys(existing, composed) if isinstance(existing, dict) else []
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    raise ConfigError(
        f"{params}: holds experiment {name} (dvc exp run/apply), which conf/ does not compose "
        f"to{f' ({shown} differ)' if shown else ''}; recomposing would drop it: "
        f"`closedloop exp save {name}` writes it into conf/experiment/{name}.yaml, "
        f"`git checkout {params}` discards it"
    )


def diff_keys(a: Any, b: Any, path: tuple = ()) -> list[str]:
    """Dotted keys whose values differ between two nested dicts (``code`` is compose's)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in [*a, *(k for k in b if k not in a)]:
            if not path and k == "code":
                continue
            out += diff_keys(a.get(k, _ABSENT), b.get(k, _ABSENT), (*path, k))
        return out
    return [] if a == b else [".".join(map(str, path))]


_ABSENT = object()


def save(name: str, params: dict, conf_dir: Path, compose) -> tuple[Path, list[str], list[str]]:
    """Write conf/experiment/<name>.yaml from ``params`` and select it in conf/config.yaml.

    ``compose(overrides, conf_dir)`` is the config's composition (closedloop.config.compose).
    Returns the file written, the group choices and the changed keys it holds.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(f"experiment name {name!r}: use letters, digits, '_', '-' and '.'")
    conf_dir = Path(conf_dir)
    config = conf_dir / "config.yaml"
    selected = _SELECTED.search(config.read_text())
    if selected is None:
        raise ConfigError(f"{rel(config)}: no `- experiment: ...` line in its defaults list")
    target = conf_dir / "experiment" / f"{name}.yaml"
    if target.exists():
        raise ConfigError(f"{rel(target)}: exists already; choose another name or remove it")

    # The new experiment replaces the one selected, so it is a difference from no experiment.
    drop = ["~experiment"] if selected.group(2) != "null" else []

    def base(extra: list[str]) -> dict:
        return compose([*drop, *extra])

    plain = base([])
    groups = _group_choices(params, plain, conf_dir, base)
    against = base([f"{g}={c}" for g, c in groups.items()])
    was = {g: plain.get(g, {}).get("name") for g in groups}
    changed = _leaves(params, against)
    gone = [k for k, v in changed if v is _ABSENT]
    if gone:
        raise ConfigError(
            f"params.yaml lacks {', '.join(gone)}, which conf/ sets: an experiment file can "
            "only add or change keys; edit conf/ by hand"
        )
    text = _experiment_yaml(name, groups, was, changed, against)
    target.parent.mkdir(parents=True, exist_ok=True)
    from closedloop.io import write_text

    before = config.read_text()
    write_text(target, text)
    write_text(config, _SELECTED.sub(rf"\g<1>{name}\g<3>", before, count=1))
    try:
        still = diff_keys(params, compose([]))
    except ConfigError:
        still = ["(conf/ no longer composes)"]
    if still:  # e.g. a key conf/config.yaml itself sets: its `_self_` is merged last
        write_text(config, before)
        target.unlink()
        raise ConfigError(
            f"{rel(target)}: conf/ would still not compose to params.yaml ({', '.join(still)} "
            f"differ: conf/config.yaml sets them after its experiment); nothing written, "
            "edit conf/ by hand"
        )
    return target, [f"{g}={c}" for g, c in groups.items()], [k for k, _ in changed]


def _group_choices(params: dict, base: dict, conf_dir: Path, compose) -> dict[str, str]:
    """The config groups whose choice differs from conf/'s, by the `name` every group file
    carries; a group that follows another (slices follows dataset) is left to follow."""
    choices = {
        g: params[g]["name"]
        for g in GROUPS
        if isinstance(params.get(g), dict)
        and params[g].get("name") != base.get(g, {}).get("name")
        and (conf_dir / g / f"{params[g].get('name')}.yaml").is_file()
    }
    for g in list(choices):
        others = [f"{o}={c}" for o, c in choices.items() if o != g]
        if others and compose(others).get(g, {}).get("name") == choices[g]:
            del choices[g]
    return choices


def _leaves(a: Any, b: Any, path: tuple = ()) -> list[tuple[str, Any]]:
    """(dotted key, value in ``a``) for each leaf where ``a`` differs from ``b``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in [*a, *(k for k in b if k not in a)]:
            if not path and k == "code":
                continue
            out += _leaves(a.get(k, _ABSENT), b.get(k, _ABSENT), (*path, k))
        return out
    return [] if a == b else [(".".join(map(str, path)), a)]


def _experiment_yaml(name: str, groups: dict, was: dict, changed: list, against: dict) -> str:
    lines = [
        "# @package _global_",
        f"# Experiment {name}, saved from params.yaml by `closedloop exp save {name}`",
        "# (the difference from conf/ of what `dvc exp run -S ...` composed).",
        f"# Selected in conf/config.yaml's defaults (`- experiment: {name}`), or: `dvc exp run -S",
        f"# experiment={name}`.",
    ]
    if groups:
        lines.append("defaults:")
        lines += [f"  - override /{g}: {c} # conf/ chooses {was[g]}" for g, c in groups.items()]
    tree: dict = {}
    for key, value in changed:
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    lines += _emit(tree, against, 0, ())
    return "\n".join(lines) + "\n"


def _emit(tree: dict, against: dict, depth: int, path: tuple) -> list[str]:
    out = []
    pad = "  " * depth
    for k, v in tree.items():
        here = (*path, k)
        if isinstance(v, dict) and v:
            out.append(f"{pad}{k}:")
            out += _emit(v, against, depth + 1, here)
            continue
        was = against
        for p in here:
            was = was.get(p, _ABSENT) if isinstance(was, dict) else _ABSENT
        note = "new key" if was is _ABSENT else f"conf/ has {_flow(was)}"
        out.append(f"{pad}{k}: {_flow(v)} # {note}")
    return out


def _flow(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000)
        .strip()
        .removesuffix("\n...")
        .removesuffix("...")
        .strip()
    )
