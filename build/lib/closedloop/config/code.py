"""The user's own code in src/, as content hashes: params.yaml's ``code`` key.

A `_target_` can name a class in a user package beside the library (src/acme_nets/). DVC
cannot see which package a stage imports by name, so compose, which depends on all of src/,
writes one sha256 per user package into params.yaml under ``code``, and every stage that
instantiates a `_target_` declares ``code`` in its params: edit a user package and exactly
those stages rerun; edit nothing and no stage does. The library itself is left out: each
stage already depends on the library modules it imports.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

LIBRARY = "closedloop"
SKIP_DIRS = {"__pycache__"}


def user_packages(src: Path) -> dict[str, list[Path]]:
    """Each user package (a directory holding Python files) or module in ``src``, and its files."""
    out: dict[str, list[Path]] = {}
    if not Path(src).is_dir():
        return out
    for entry in sorted(Path(src).iterdir()):
        name = entry.name
        if name.startswith(".") or name == LIBRARY or name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            files = sorted(
                p
                for p in entry.rglob("*")
                if p.is_file()
                and not SKIP_DIRS & set(p.relative_to(entry).parts)
                and not p.name.startswith(".")
                and p.suffix != ".pyc"
            )
            if any(p.suffix == ".py" for p in files):
                out[name] = files
        elif entry.suffix == ".py":
            out[entry.stem] = [entry]
    return out


def user_code(src: Path) -> dict[str, str]:
    """{package: sha256 of its files' relative paths and bytes}, sorted by package."""
    hashes = {}
    for name, files in user_packages(src).items():
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(src).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
        hashes[name] = h.hexdigest()
    return hashes
