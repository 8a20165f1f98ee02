"""No stale results: every stage declares, in dvc.yaml, exactly the code it runs.

A stage's code is its module in pipelines/ and every library module it imports. Miss one and
an edit to it leaves `dvc repro` "up to date" with stale metrics and a stale verdict; list
one it does not import and DVC reruns it for nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, make_project, run
from tests.imports import closure

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE_ROOTS = ("pipelines/", "src/")


def code_deps(stage: str) -> list[str]:
    return [d for d in STAGES[stage].get("deps", []) if d.startswith(CODE_ROOTS)]


def covered(deps: list[str]) -> set[Path]:
    """The .py files the deps name: a file itself, or every .py file below a directory.
    (Templates are deps too: test_dvc_yaml_lists_the_templates_each_stage_renders checks them.)"""
    files: set[Path] = set()
    for dep in deps:
        path = ROOT / dep
        if path.is_dir():
            files |= set(path.rglob("*.py"))
        elif path.suffix == ".py":
            files.add(path)
    return files


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_lists_exactly_the_code_each_stage_imports(stage):
    module = STAGES[stage]["cmd"].removeprefix("python -m ")
    imported = closure(module)
    declared = covered(code_deps(stage))
    rel = lambda paths: sorted(str(p.relative_to(ROOT)) for p in paths)  # noqa: E731
    assert not imported - declared, (
        f"stage {stage} imports {rel(imported - declared)} but dvc.yaml does not list them: "
        "add them to its deps"
    )
    assert not declared - imported, (
        f"stage {stage} lists {rel(declared - imported)} in dvc.yaml but never imports them"
    )


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
        imported = {p.relative_to(ROOT) for p in closure(STAGES[stage]["cmd"].split()[-1])}
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
