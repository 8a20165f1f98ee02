"""`closedloop lock-check`: did this machine's `dvc repro` reproduce the committed dvc.lock?

A pull request's benchmark job that misses the DVC cache retrains on its runner's CPU. When
that run's outputs differ from what the committed dvc.lock records, the report judges a model
the pull request does not contain, and promotion (which resolves the committed lock) would
refuse it later. This says so where people read: in the report, and as a failed check.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from closedloop.errors import RegistryError
from closedloop.io import write_text

LOCK = Path("dvc.lock")


def _outputs(text: str, where: str) -> tuple[dict[str, str], dict[str, dict]]:
    """Per output path its md5, and per stage its recorded inputs (deps and params)."""
    try:
        stages = (yaml.safe_load(text) or {}).get("stages") or {}
        outs = {o["path"]: o.get("md5", "") for s in stages.values() for o in s.get("outs", [])}
        inputs = {n: {"deps": s.get("deps"), "params": s.get("params")} for n, s in stages.items()}
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        raise RegistryError(f"{where}: not a readable dvc.lock") from None
    return outs, inputs


def lock_differences(root: Path = Path("."), rev: str = "HEAD") -> list[str]:
    """Sentences naming what the workspace dvc.lock records differently from ``rev``'s."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:{LOCK}"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RegistryError(f"{LOCK} at {rev}: not found in git ({proc.stderr.strip()})")
    path = Path(root) / LOCK
    if not path.is_file():
        raise RegistryError(f"{LOCK}: not found; run `dvc repro` first")
    committed, committed_inputs = _outputs(proc.stdout, f"{LOCK} at {rev}")
    here, here_inputs = _outputs(path.read_text(encoding="utf-8"), str(LOCK))
    found = [
        f"stage {name} ran on other inputs than the committed lock records (code, params or "
        "data changed without `dvc repro` and a commit of dvc.lock)"
        for name in sorted(set(committed_inputs) | set(here_inputs))
        if committed_inputs.get(name) != here_inputs.get(name)
    ]
    found += [
        f"{out}: committed md5 {committed.get(out, 'none')[:12]}, this run {md5[:12]}"
        for out, md5 in sorted(here.items())
        if committed.get(out) != md5
    ]
    return found


def note(differences: list[str], rev: str = "HEAD") -> str:
    """The warning that opens the report when the run did not reproduce the lock."""
    items = "\n".join(f"> - {d}" for d in differences)
    return (
        f"> [!WARNING]\n> **This run did not reproduce the committed dvc.lock** ({rev}). "
        "The model judged below was trained on this runner and is not the one the pull "
        "request records; promotion will refuse it. Run `dvc repro` and commit dvc.lock "
        "(see the README, *Same bytes on any machine*).\n>\n" + items + "\n\n"
    )


def check(root: Path = Path("."), report: Path | None = None, rev: str = "HEAD") -> list[str]:
    """The differences; when there are any and ``report`` exists, the note opens it."""
    differences = lock_differences(root, rev)
    if differences and report is not None and Path(report).is_file():
        text = Path(report).read_text(encoding="utf-8")
        write_text(report, note(differences, rev) + text)
    return differences
