"""Which file set a key: so an error blames the file (or override) that wrote the bad value.

Hydra merges the files of its defaults list in order, then applies command-line overrides;
the last one that sets a key wins. Origins replays that order over the raw YAML of each file
(no interpolation, no merging) and answers, for a key path, the last writer. A file that sets
a mapping only partly (``trainer: {max_epochs: 15}`` in an experiment) sets those keys only;
one that sets a list or scalar sets everything below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_UNSET = object()


def rel(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class Origins:
    """The writers of a composition, in merge order: (label, raw tree) pairs."""

    def __init__(self, layers: list[tuple[str, Any]], fallback: str):
        self.layers = layers
        self.fallback = fallback

    def __call__(self, path: tuple) -> str:
        """The label of the last writer of ``path``, or of its nearest written ancestor."""
        for n in range(len(path), 0, -1):
            for label, tree in reversed(self.layers):
                if _sets(tree, path[:n]):
                    return label
        return self.fallback

    @classmethod
    def from_hydra(cls, conf_dir: Path, config_name: str, overrides: list[str]) -> Origins:
        """Replay Hydra's defaults list (inside an initialised Hydra context) and the overrides."""
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode

        loader = GlobalHydra.instance().config_loader()
        defaults = loader.compute_defaults_list(config_name, overrides, RunMode.RUN)
        layers: list[tuple[str, Any]] = []
        for d in defaults.defaults:
            if d.config_path is None or d.package == "hydra" or d.package.startswith("hydra."):
                continue
            path = Path(conf_dir) / f"{d.config_path}.yaml"
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if isinstance(tree, dict):
                tree.pop("defaults", None)
            for part in reversed([p for p in (d.package or "").split(".") if p]):
                tree = {part: tree}
            layers.append((f"{rel(path)}", tree))
        groups = set(defaults.overrides.known_choices)
        for o in OverridesParser.create().parse_overrides(overrides):
            if o.key_or_group in groups or o.key_or_group.split("@")[0] in groups:
                continue  # a group choice: it changed which files are in the list above
            tree: Any = _UNSET
            for part in reversed(o.key_or_group.split(".")):
                tree = {part: tree}
            layers.append((f"override '{o.input_line}'", tree))
        return cls(layers, f"{rel(Path(conf_dir) / config_name)}.yaml")


def _sets(tree: Any, path: tuple) -> bool:
    node = tree
    for part in path:
        if not isinstance(node, dict):
            return True  # a scalar or list written above this key replaced all of it
        if part not in node:
            return False
        node = node[part]
    return True


def get(tree: Any, path: tuple, default: Any = _UNSET) -> Any:
    """The value at a key path (ints index lists), or ``default``."""
    node = tree
    for part in path:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node)
        ):
            node = node[part]
        else:
            return default
    return node
