"""The registry, promotion, rollback and the champion stage, on real git + DVC repositories."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from closedloop.errors import RegistryError
from closedloop.registry.registry import (
    describe,
    dump_registry,
    empty_registry,
    load_registry,
    next_version,
    record,
    save_registry,
)
from closedloop.registry.rollback import rollback
from tests.conftest import REG, ROOT, assert_one_line_error, cli
from tests.fixtures import entry, promoted


# ---------------------------------------------------------------- the file itself
def test_committed_registry_is_empty_and_canonical():
    reg = load_registry(ROOT / REG)
    assert reg == empty_registry()
    assert (ROOT / REG).read_text() == dump_registry(reg)


def test_save_and_load_round_trip(tmp_path):
    reg = promoted("v1.0.0", "v1.1.0")
    reg["versions"][0]["commit"] = "1234567" + "0" * 33  # digits only: must stay a string
    reg["versions"][0]["dvc_md5"] = "12e4"  # would read back as a float unquoted
    path = tmp_path / "registry.yaml"
    save_registry(reg, path)
    assert load_registry(path) == reg
    assert path.read_text().startswith("# Which model version is in production")


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("versions: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("model: closedloop\nproduction: null\nversions: {}\nhistory: []\n", "versions"),
        ("model: closedloop\nproduction: v9.0.0\nversions: []\nhistory: []\n", "v9.0.0"),
        ("model: 3\nproduction: null\nversions: []\nhistory: []\n", "model"),
        ("model: m\nproduction: [v1]\nversions: []\nhistory: []\n", "production"),
    ],
)
def test_corrupt_registry_is_a_one_line_error(tmp_path, text, culprit):
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as e:
        load_registry(path)
    assert str(path) in str(e.value) and culprit in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("edit", "culprit"),
    [
        (lambda r: r["versions"][0].update(model_hash="xyz"), "versions[0].model_hash"),
        (lambda r: r["versions"][1].pop("commit"), "versions[1]: missing commit"),
        (lambda r: r["versions"][1].update(version="v1.0.0"), "appears twice"),
        (lambda r: r.update(production="v1.0.0"), "disagrees with the last history event"),
        (lambda r: r["history"][0].update(action="delete"), "history[0].action"),
        (lambda r: r.update(extra=1), "exactly the keys"),
    ],
)
def test_inconsistent_registry_is_refused(tmp_path, edit, culprit):
    reg = promoted("v1.0.0", "v1.1.0")
    edit(reg)
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(reg))
    with pytest.raises(RegistryError) as e:
        load_registry(path)
    assert culprit in str(e.value)


def test_cli_reports_a_corrupt_registry_in_one_line_and_leaves_it(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_bytes(b"production: [\x00garbage")
    proc = cli("rollback", "--registry", str(path), cwd=tmp_path)
    assert_one_line_error(proc, str(path))
    assert path.read_bytes() == b"production: [\x00garbage"


def test_next_version_bumps_the_highest_minor_numerically():
    assert next_version(empty_registry()) == "v1.0.0"
    assert next_version(promoted("v1.0.0", "v1.9.0", "v1.2.0")) == "v1.10.0"
    assert next_version(promoted("v1.3.0", "v2.0.1")) == "v2.1.0"


# ------------------------------------------------------------------------ rollback
def test_rollback_walks_back_one_production_version_per_call(tmp_path):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0", "v1.1.0", "v1.2.0"), path)
    entries = copy.deepcopy(load_registry(path)["versions"])

    reg, restored, replaced = rollback(path, change="incident 1", at="2026-02-01T00:00:00Z")
    assert (reg["production"], replaced) == ("v1.1.0", "v1.2.0")
    assert restored == entries[1]
    reg, restored, _ = rollback(path, change="incident 2")
    assert reg["production"] == "v1.0.0" and restored == entries[0]

    after = load_registry(path)
    assert after["versions"] == entries  # entries are never modified
    assert after["history"][-2:][0] == {
        "action": "rollback",
        "version": "v1.1.0",
        "previous": "v1.2.0",
        "at": "2026-02-01T00:00:00Z",
        "change": "incident 1",
    }
    before = path.read_bytes()
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(path)
    assert path.read_bytes() == before


def test_rollback_skips_versions_already_rolled_back_from(tmp_path):
    """v1 → v2, back to v1, then v3: rolling back from v3 returns to v1, not to the bad v2."""
    path = tmp_path / "registry.yaml"
    reg = promoted("v1.0.0", "v1.1.0")
    record(reg, "rollback", "v1.0.0", "v1.1.0 broke", "2026-01-03T00:00:00Z")
    reg["versions"].append(entry(4, "v1.2.0"))
    record(reg, "promote", "v1.2.0", "PR #4", "2026-01-04T00:00:00Z")
    save_registry(reg, path)
    assert rollback(path)[0]["production"] == "v1.0.0"


def test_rollback_to_an_explicit_version_and_forward_again(tmp_path):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0", "v1.1.0", "v1.2.0"), path)
    assert rollback(path, to="v1.0.0")[0]["production"] == "v1.0.0"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(path)
    assert rollback(path, to="v1.2.0")[0]["production"] == "v1.2.0"  # roll forward
    assert rollback(path)[0]["production"] == "v1.0.0"


@pytest.mark.parametrize(
    ("versions", "args", "culprit"),
    [
        ((), [], "nothing is in production"),
        (("v1.0.0",), [], "nothing to roll back to"),
        (("v1.0.0", "v1.1.0"), ["--to", "v3.0.0"], "unknown version 'v3.0.0'"),
        (("v1.0.0", "v1.1.0"), ["--to", "v1.1.0"], "already production"),
    ],
)
def test_rollback_refusals_leave_the_registry_untouched(tmp_path, versions, args, culprit):
    path = tmp_path / "registry.yaml"
    save_registry(promoted(*versions), path)
    before = path.read_bytes()
    proc = cli("rollback", "--registry", str(path), *args, cwd=tmp_path)
    assert_one_line_error(proc, culprit)
    assert path.read_bytes() == before


def test_rollback_cli_writes_the_pull_request_body(tmp_path):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0", "v1.1.0"), path)
    body = tmp_path / "rollback.md"
    cli(
        "rollback",
        "--registry",
        str(path),
        "--change",
        "incident 9",
        "--body-out",
        str(body),
        cwd=tmp_path,
        check=True,
    )
    assert load_registry(path)["history"][-1]["change"] == "incident 9"
    assert "v1.1.0 → **v1.0.0**" in body.read_text()


def test_pull_request_body_comes_from_the_template(tmp_path, monkeypatch):
    entry = {**promoted("v1.0.0")["versions"][0], "metrics": {"production": {"accuracy": 0.5}}}
    body = describe(entry, None, "promote")
    assert body == (
        "## Promote v1.0.0\n\n"
        "`models/registry.yaml` production: none → **v1.0.0**.\n\n"
        "| | |\n| --- | --- |\n"
        f"| commit | `{entry['commit']}` |\n"
        f"| weights sha256 | `{entry['model_hash']}` |\n"
        f"| DVC md5 of models/candidate | `{entry['dvc_md5']}` |\n"
        f"| training data | `{'d' * 64}` |\n"
        "| gate | pass on production |\n"
        "| change | PR #1 |\n\n"
        "| split | accuracy |\n| --- | --- |\n| production | 0.5 |\n\n"
        "Merging this pull request, after review, deploys it; reverting it rolls back.\n"
    )
    assert describe(entry, "v1.1.0", "rollback").startswith("## Roll back to v1.0.0\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/registry_pr.md.j2").write_text("{{ action }}: {{ entry.version }}\n")
    assert describe(entry, None, "promote") == "promote: v1.0.0\n"


# ----------------------------------------------------------------------- atomicity
def test_a_failed_replace_leaves_the_old_registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0"), path)
    before = path.read_bytes()

    def crash(*_):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_registry(promoted("v1.0.0", "v1.1.0"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["registry.yaml"]  # no temp file left


KILLED_WRITER = """
import os, pathlib, signal, sys
from closedloop.registry.registry import empty_registry, record, save_registry
from tests.fixtures import entry
reg = empty_registry()
for i in range(1, 1001):  # a large registry, about 0.5 MB
    reg["versions"].append(entry(i, f"v1.{i}.0"))
record(reg, "promote", "v1.1000.0", "big", "2026-01-01T00:00:00Z")
if sys.argv[2] == "mid-write":
    def half_then_die(self, text, **kw):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    pathlib.Path.write_text = half_then_die
else:  # before-rename: the new file is complete and synced, but not yet in place
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
save_registry(reg, sys.argv[1])
"""


@pytest.mark.parametrize("moment", ["mid-write", "before-rename"])
def test_a_killed_writer_leaves_the_old_registry_whole(tmp_path, moment):
    path = tmp_path / "registry.yaml"
    save_registry(promoted("v1.0.0"), path)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), moment],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    assert path.read_bytes() == before
    assert load_registry(path)["production"] == "v1.0.0"


def test_deploy_tags_are_named_and_counted_by_gto():
    from gto.constants import Action
    from gto.tag import parse_name

    from closedloop.registry.deploy import tag_names

    existing = {"weather@v1.0.0", "weather#prod#1", "weather#prod#2", "other#prod#7", "v9"}
    reg = {"model": "weather"}
    assert tag_names(reg, {"version": "v1.0.0"}, existing) == ["weather#prod#3"]
    new = tag_names(reg, {"version": "1.1.0"}, existing)
    assert new == ["weather@v1.1.0", "weather#prod#3"]
    assert [parse_name(t)["action"] for t in new] == [Action.REGISTER, Action.ASSIGN]
    assert tag_names({"model": "fresh"}, {"version": "v0.1.0"}, existing) == [
        "fresh@v0.1.0",
        "fresh#prod#1",
    ]
