"""The benchmark report: the verdict first, the sections in order, deterministic, and always
small enough for a GitHub comment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from closedloop.errors import ClosedloopError, ConfigError
from closedloop.io import write_json
from closedloop.reporting.report import COMMENT_LIMIT, MARKER, render, write_report
from tests.conftest import ROOT
from tests.fixtures import CHAMPION, DRIFT, SCHEMA, card, drift_column

ORDER = [
    "closedloop benchmark",
    "Champion vs candidate",
    "Slices",
    "Gates",
    "Drift",
    "Data lineage",
    "Training cost",
]


def metric(cand, champ):
    return {
        "candidate": cand,
        "champion": champ,
        "delta": round(cand - champ, 6),
        "ci_low": round(cand - champ - 0.03, 6),
        "ci_high": round(cand - champ + 0.03, 6),
    }


def write_inputs(root, n_slice_values=3, verdict="fail", drift=True):
    slices = {
        "season": {
            f"value-{i:05d}": {
                "n": 40,
                "accuracy": metric(0.6, 0.5),
                "mcnemar": {"b": 9, "c": 5, "p_value": 0.4},
                "p_holm": 0.01,
            }
            for i in range(n_slice_values)
        }
    }
    comp = {
        "n": 730,
        "has_champion": True,
        "overall": {"accuracy": metric(0.62, 0.55), "macro_f1": metric(0.31, 0.30)},
        "baseline": {"accuracy": 0.01, "macro_f1": 0.004},
        "mcnemar": {"b": 80, "c": 30, "p_value": 1.2e-6},
        "slices": slices,
    }
    write_json(
        root / "reports/comparison.json",
        {
            "champion": {"version": "v1.0.0", "model_hash": "a" * 64, "commit": "c" * 40},
            "task": "multiclass",
            "baseline_class": "rain",
            "splits": {"production": comp},
        },
    )
    write_json(
        root / "reports/metrics.json",
        {"production": {"n": 730, "accuracy": 0.62, "macro_f1": 0.31, "ece": 0.1}},
    )
    checks = [
        {
            "name": "floor:accuracy",
            "passed": True,
            "status": "pass",
            "value": 0.62,
            "threshold": 0.4,
            "reason": "0.620 >= 0.400",
        },
        {
            "name": "drift:max_drifted_share",
            "passed": verdict == "pass",
            "status": verdict,
            "value": 0.67,
            "threshold": 0.5,
            "reason": "4 of 6 columns drifted",
        },
    ]
    write_json(
        root / "reports/gate.json",
        {
            "verdict": verdict,
            "model_hash": "b" * 64,
            "champion": {"version": "v1.0.0", "model_hash": "a" * 64},
            "split": "production",
            "policy": "vs_champion",
            "checks": checks,
        },
    )
    if drift:
        columns = {
            "weather": drift_column("target", "chi-square p_value", 0.0, True),
            "prediction": drift_column("prediction", "chi-square p_value", 0.001, True),
            "wind": drift_column("feature", "K-S p_value", 0.4, False),
        }
        write_json(
            root / "reports/drift.json",
            {
                **DRIFT,
                "drifted_share": 0.5,
                "drifted_count": 3,
                "n_columns": 6,
                "columns": columns,
                "top_drifted": ["weather", "prediction"],
            },
        )
    write_json(root / "artifacts/snapshot/schema.json", SCHEMA)
    write_json(root / "models/candidate/card.json", card())
    write_json(root / "models/champion/card.json", card(train_rows=500, data_hash="e" * 64))
    write_json(root / "models/champion/entry.json", {**CHAMPION, "model_hash": "a" * 64})


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    return tmp_path


def test_sections_come_in_the_documented_order(inputs):
    md, page = render()
    assert md.startswith(MARKER)
    positions = [md.index(title) for title in ORDER]
    assert positions == sorted(positions)
    assert "❌ FAIL" in md.splitlines()[1]
    assert "`drift:max_drifted_share`" in md  # the failing check is named up front
    assert "Training rows added since the champion: **+47**; data hash changed." in md
    assert all(title in page for title in ORDER)


def test_report_is_deterministic(inputs):
    assert render() == render()


def test_comment_stays_under_githubs_limit_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path, n_slice_values=2_000)
    md, page = render()
    assert len(md) < COMMENT_LIMIT
    assert "1940 more slice rows truncated; see `reports/comparison.json`" in md  # 60 shown
    assert page.count("value-") == 2_000  # the HTML artefact keeps everything


def test_long_rows_shrink_the_tables_until_the_comment_fits(tmp_path, monkeypatch):
    """60 rows of 2,000-character slice values would be 120,000 characters: the tables halve
    until the comment fits, and the note says how many rows are left out."""
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path, n_slice_values=60)
    path = tmp_path / "reports/comparison.json"
    long = path.read_text().replace('"value-', '"' + "x" * 2_000 + "-value-")
    path.write_text(long)
    md, page = render()
    assert len(md) < COMMENT_LIMIT
    shown = md.count("-value-")
    assert 0 < shown < 60 and f"{60 - shown} more slice rows truncated" in md
    assert md.startswith(MARKER) and "Training cost" in md  # later sections survive
    assert page.count("-value-") == 60


def test_html_is_self_contained(inputs):
    _, page = render()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_html_renders_the_markdown_tables_and_escapes_raw_html(inputs):
    """markdown-it-py renders the GFM tables; a slice value that looks like HTML stays text."""
    path = inputs / "reports/comparison.json"
    path.write_text(path.read_text().replace("value-00001", "<script>alert(1)</script>"))
    _, page = render()
    assert page.count("<table>") == 6  # comparison, slices, gates, drift, lineage, cost
    assert "<th>candidate</th>" in page and "<strong>production</strong>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_users_template_replaces_the_default(inputs):
    """templates/<name> in the repository overrides the library's template of that name."""
    (inputs / "templates").mkdir()
    (inputs / "templates/benchmark_body.md.j2").write_text(
        "## {{ gate.verdict | upper }} for {{ gate.model_hash | short }}\n"
    )
    md, page = render()
    assert (
        md
        == f"{MARKER}\n## FAIL for `bbbbbbbbbbbb`\n\n<sub>Generated by `dvc repro` (stage `report`). Full details: `reports/` artefacts.</sub>\n"
    )
    assert "<h2>FAIL for <code>bbbbbbbbbbbb</code></h2>" in page


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{% if gate.verdict %}unclosed\n", "templates/benchmark_body.md.j2:"),
        ("{{ gate.no_such_field }}\n", "no_such_field"),
        ("{{ nothing_like_this }}\n", "'nothing_like_this' is undefined"),
    ],
)
def test_a_broken_template_is_one_line_naming_it(inputs, template, words):
    (inputs / "templates").mkdir()
    (inputs / "templates/benchmark_body.md.j2").write_text(template)
    with pytest.raises(ConfigError) as e:
        render()
    assert "\n" not in str(e.value) and words in str(e.value)
    assert "benchmark_body.md.j2" in str(e.value)


BAD = ["{not json", '{"verdict": 3}', None]


@pytest.mark.parametrize(
    "name",
    [
        "reports/gate.json",
        "reports/comparison.json",
        "reports/metrics.json",
        "reports/drift.json",
        "artifacts/snapshot/schema.json",
        "models/candidate/card.json",
        "models/champion/entry.json",
        "models/champion/card.json",
    ],
)
@pytest.mark.parametrize("content", BAD, ids=["malformed", "mis-shaped", "missing"])
def test_a_bad_input_is_one_line_naming_it(inputs, name, content):
    """Before the artefacts were typed, a corrupt input here was a traceback."""
    path = inputs / name
    if content is None:
        path.unlink()
        if name == "reports/drift.json":  # the one input the report can do without
            assert "No drift report (reports/drift.json is missing)." in render()[0]
            return
    else:
        path.write_text(content)
    with pytest.raises(ClosedloopError) as e:
        write_report()
    assert str(e.value).startswith(f"{name}: ") and "\n" not in str(e.value)
    assert not (inputs / "reports/benchmark.md").exists()


def test_the_stage_prints_that_line_and_exits_2(inputs):
    (inputs / "reports/gate.json").write_text('{"verdict": "maybe"}')
    (inputs / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.report"],
        cwd=inputs,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: reports/gate.json: verdict: Input should be 'pass', 'fail' or 'inconclusive', "
        "got 'maybe' (and 5 more problems)"
    ]
