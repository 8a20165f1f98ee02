"""The benchmark report: the verdict first, the sections in order, deterministic, and always
small enough for a GitHub comment."""

from __future__ import annotations

import re

import pytest

from closedloop.io import write_json
from closedloop.reporting.report import COMMENT_LIMIT, MARKER, render
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
    write_inputs(tmp_path, n_slice_values=20_000)
    md, page = render()
    assert len(md) < COMMENT_LIMIT
    assert re.search(r"more slice rows truncated; see `reports/comparison.json`", md)
    assert page.count("value-") == 20_000  # the HTML artefact keeps everything


def test_html_is_self_contained(inputs):
    _, page = render()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
