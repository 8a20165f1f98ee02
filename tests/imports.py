"""The import closure of a module inside this project, read from its source (not by importing).

Every ``import``/``from … import`` anywhere in a file counts, in function bodies too: a lazy
import still runs when the stage does. Importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, so they count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {"closedloop": ROOT / "src", "pipelines": ROOT}


def module_file(name: str) -> Path | None:
    top = name.split(".")[0]
    if top not in PACKAGE_ROOTS:
        return None
    base = PACKAGE_ROOTS[top].joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # maybe a submodule


def closure(module: str) -> set[Path]:
    """Every project file that running ``python -m <module>`` imports, itself included."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            path = module_file(name)
            if path is not None and name not in seen:
                seen[name] = path
                todo.extend(_imported_names(path, name))
    return set(seen.values())
