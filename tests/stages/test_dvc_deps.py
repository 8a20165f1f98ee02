"""No stale results: every stage declares, in dvc.yaml, exactly the code it runs.

A stage's code is its module in pipelines/, every library module it imports, and every
library module its params name by `_target_` (Hydra imports those by name, so no import
statement shows them). Miss one and an edit to it leaves `dvc repro` "up to date" with stale
metrics and a stale verdict; list one it does not import and DVC reruns it for nothing.

A user's own package in src/ is covered differently: compose depends on all of src/ and
writes a hash per user package into params.yaml's `code`; every stage that builds a
`_target_` declares `code` (and `allowed_targets`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from closedloop.config.targets import target_nodes
from tests.conftest import ROOT, make_project, run
from tests.imports import closure

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
CODE_ROOTS = ("pipelines/", "src/")
INSTANTIATE = ROOT / "src/closedloop/instantiate.py"


def code_deps(stage: str) -> list[str]:
    return [d for d in STAGES[stage].get("deps", []) if d == "src" or d.startswith(CODE_ROOTS)]


def covered(deps: list[str]) -> set[Path]:
    """The .py files the deps name: a file itself, or every .py file below a directory
    (templates are checked by test_dvc_yaml_lists_the_templates_each_stage_renders);
    the dep `src` itself stands for the user packages in it (the library has its own deps)."""
    files: set[Path] = set()
    for dep in deps:
        path = ROOT / dep
        if dep == "src":
            files |= {
                p for p in path.rglob("*.py") if "closedloop" not in p.relative_to(path).parts[:1]
            }
        elif path.is_dir():
            files |= set(path.rglob("*.py"))
        elif path.suffix == ".py":
            files.add(path)
    return files


def declared_params(stage: str) -> set[str]:
    return {p if isinstance(p, str) else next(iter(p)) for p in STAGES[stage].get("params", [])}


def stage_code(stage: str) -> set[Path]:
    """What a stage runs: its import closure and that of each library `_target_` its params
    name (the committed params.yaml: the default config)."""
    files = closure(STAGES[stage]["cmd"].removeprefix("python -m "))
    for key in declared_params(stage):
        node = PARAMS
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        for _, target in target_nodes(node):
            module = target["_target_"].rpartition(".")[0]
            if module.split(".")[0] == "closedloop":
                files |= closure(module)
    return files


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_lists_exactly_the_code_each_stage_imports(stage):
    imported = stage_code(stage)
    declared = covered(code_deps(stage))
    rel = lambda paths: sorted(str(p.relative_to(ROOT)) for p in paths)  # noqa: E731
    assert not imported - declared, (
        f"stage {stage} imports {rel(imported - declared)} but dvc.yaml does not list them: "
        "add them to its deps"
    )
    assert not declared - imported, (
        f"stage {stage} lists {rel(declared - imported)} in dvc.yaml but never imports them"
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_that_build_targets_rerun_when_user_code_or_allowed_targets_change(stage):
    """A stage that instantiates a `_target_` (it imports closedloop.instantiate) may
    run a user package: it declares `code` and `allowed_targets`; compose, which writes
    `code`, depends on all of src/."""
    if stage == "compose":
        assert "src" in STAGES[stage]["deps"], "compose must depend on src/ to hash user code"
        return
    builds = INSTANTIATE in stage_code(stage)
    keys = {"code", "allowed_targets"}
    if builds:
        assert keys <= declared_params(stage), f"stage {stage} builds targets: declare {keys}"
    else:
        assert not keys & declared_params(stage), f"stage {stage} builds no target"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("deps"))


def changed_deps(project: Path) -> dict[str, set[str]]:
    """Per stage, the code deps `dvc status` reports changed (the copy has no outputs, and
    the tests lower max_epochs in conf/, so data and config deps differ anyway)."""
    status = json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")
    out: dict[str, set[str]] = {}
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else []:
            if isinstance(change, dict):
                code = [d for d in change.get("changed deps", {}) if d.startswith(CODE_ROOTS)]
                out.setdefault(stage.split(":")[-1], set()).update(code)
    return out


def test_editing_any_imported_module_makes_its_stages_change(project):
    """The committed dvc.lock matches the code; after an edit to every module, each stage
    reports a changed dep covering every module it imports."""
    stale = {s: sorted(d) for s, d in changed_deps(project).items() if d}
    assert not stale, f"dvc.lock does not match the committed code; run `dvc repro`: {stale}"
    for path in [*project.glob("pipelines/**/*.py"), *project.glob("src/**/*.py")]:
        path.write_text(path.read_text() + "\n# edited by the test\n")
    changed = changed_deps(project)
    for stage in STAGES:
        imported = {p.relative_to(ROOT) for p in stage_code(stage)}
        reported = changed.get(stage, set())
        missing = [
            str(f)
            for f in imported
            if not any(f == Path(d) or Path(d) in f.parents for d in reported)
        ]
        assert not missing, f"editing {missing} does not change stage {stage} for DVC"


def templates_rendered(stage: str) -> set[str]:
    """The templates a stage renders: every "*.j2" string in its code, and what they include."""
    import ast

    import jinja2
    from jinja2 import meta

    from closedloop.templating import DEFAULTS

    shipped = {p.name for p in DEFAULTS.glob("*.j2")}
    names = {
        node.value
        for path in closure(STAGES[stage]["cmd"].split()[-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in shipped
    }
    env, todo, seen = jinja2.Environment(), list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            source = (DEFAULTS / name).read_text(encoding="utf-8")
            todo += [n for n in meta.find_referenced_templates(env.parse(source)) if n]
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_lists_the_templates_each_stage_renders(stage):
    """An edit to a template, the library's or a user's copy in templates/, reruns the stages
    that render it, and only those."""
    rendered = templates_rendered(stage)
    # registry.describe renders registry_pr.md.j2 for the CLI, not for the champion stage
    rendered -= {"registry_pr.md.j2"} if stage == "champion" else set()
    declared = {
        d.removeprefix("src/closedloop/templates/")
        for d in STAGES[stage].get("deps", [])
        if d.startswith("src/closedloop/templates/")
    }
    assert declared == rendered, f"stage {stage}: dvc.yaml lists {declared}, it renders {rendered}"
    assert ("templates" in STAGES[stage]["deps"]) == bool(rendered), (
        f"stage {stage}: templates/ (the user's overrides) must be a dep exactly when it renders"
    )


def test_a_users_template_reruns_exactly_the_stages_that_render_it(project):
    (project / "templates/errors.md.j2").write_text("# {{ errors }} errors\n")
    status = json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")
    changed = {
        stage.split(":")[-1]
        for stage, changes in status.items()
        for change in changes
        if isinstance(change, dict) and "templates" in change.get("changed deps", {})
    }
    assert changed == {"errors", "report"}
