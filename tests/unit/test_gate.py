"""The gate on real models and the real Seattle weather: a better candidate passes; a point
improvement the data cannot confirm, a slice regression, a missing metric, too few samples and
drift over the limit never do."""

from __future__ import annotations

import copy

from closedloop.artefacts.champion import ChampionEntry
from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison, Metrics
from closedloop.artefacts.gate import GateReport
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.evaluation.baselines import compare_baselines
from closedloop.evaluation.statistics import compare_split
from closedloop.gating import gate
from tests.fixtures import (
    CHAMPION,
    DRIFT,
    METRICS_CFG,
    PARAMS,
    SCHEMA,
    eval_frame,
    gate_reports,
    seattle,
    split_info,
)

GATES = PARAMS["gates"]
SLICES = [s["name"] for s in PARAMS["slices"]["slices"]]


def judge(
    scenario: str, gates: dict = GATES, champion=CHAMPION, drift=DRIFT, edit=None, schema=SCHEMA
) -> GateReport:
    """The gate on the reports evaluate and drift would write (as dicts, to edit first)."""
    comparison, metrics = copy.deepcopy(gate_reports(scenario))
    if edit:
        edit(comparison, metrics)
    return gate.judge(
        Comparison.model_validate(comparison),
        Metrics.model_validate(metrics),
        None if drift is None else DriftReport.model_validate(drift),
        SnapshotSchema.model_validate(schema),
        gates,
        None if champion is None else ChampionEntry.model_validate(champion),
        "a" * 64,
        slice_names=SLICES,
        confidence_level=0.95,
    )


def by_name(result: GateReport) -> dict:
    return {c.name: c for c in result.checks}


def not_passing(result: GateReport) -> dict:
    return {c.name: c.status for c in result.checks if c.status != "pass"}


def test_better_candidate_passes():
    better = gate_reports("better")[0]["splits"]["production"]
    assert better["n"] == 549 and better["overall"]["accuracy"]["ci_low"] > 0  # really better
    result = judge("better")
    assert result.verdict == "pass", not_passing(result)
    assert result.policy == "vs_champion"
    assert result.champion.model_dump() == {"version": "v1.0.0", "model_hash": "c" * 64}
    checks = by_name(result)
    assert checks["vs_champion:accuracy"].value > -0.02
    assert {"min_samples", "floor:accuracy", "beat_baseline:dummy:accuracy"} <= set(checks)
    assert "not gated" in checks["slice:true_class=rain"].reason  # 8 rainy days
    assert checks["slice:season=winter"].status == "pass"
    assert all(c.passed == (c.status == "pass") for c in result.checks)
    assert GateReport.model_validate_json(result.model_dump_json()) == result


def test_point_improvement_with_ci_across_the_margin_is_not_a_pass():
    comp = gate_reports("tree")[0]["splits"]["production"]["overall"]["macro_f1"]
    assert comp["delta"] > 0 > -0.02 >= comp["ci_low"]  # better on paper, not on the CI
    result = judge("tree", gates={**GATES, "beat_baseline": None})
    check = by_name(result)["vs_champion:macro_f1"]
    assert check.status == "inconclusive" and not check.passed
    assert result.verdict == "inconclusive"


def test_confidently_worse_candidate_fails():
    result = judge("worse")
    assert by_name(result)["vs_champion:accuracy"].status == "fail"
    assert result.verdict == "fail"


def test_slice_regression_fails_even_when_overall_improves():
    overall = gate_reports("summer")[0]["splits"]["production"]
    assert overall["overall"]["accuracy"]["delta"] > 0
    assert overall["slices"]["season"]["summer"]["accuracy"]["delta"] < -0.1
    result = judge("summer", gates={**GATES, "beat_baseline": None})  # a close call here
    assert result.verdict == "fail"
    assert not_passing(result) == {"slice:season=summer": "fail"}  # vs_champion passes
    assert "significant" in by_name(result)["slice:season=summer"].reason


def test_missing_metric_fails():
    def drop(comparison, metrics):
        del metrics["production"]["macro_f1"]
        del comparison["splits"]["production"]["overall"]["macro_f1"]

    result = judge("better", edit=drop)
    assert result.verdict == "fail"
    assert not_passing(result) == {"floor:macro_f1": "fail", "vs_champion:macro_f1": "fail"}
    assert "missing metric" in by_name(result)["floor:macro_f1"].reason

    def no_split(comparison, metrics):
        comparison["splits"].clear()
        metrics.clear()

    assert not_passing(judge("better", edit=no_split))["min_samples"] == "fail"


def test_missing_slice_fails():
    def drop(comparison, metrics):
        del comparison["splits"]["production"]["slices"]["precipitation"]

    result = judge("better", edit=drop)
    assert not_passing(result) == {"slice:precipitation": "fail"}
    assert "missing slice" in by_name(result)["slice:precipitation"].reason


def test_too_few_samples_is_inconclusive():
    result = judge("better", gates={**GATES, "min_samples": 1000})  # 549 real days
    assert result.verdict == "inconclusive"
    assert not_passing(result) == {"min_samples": "inconclusive"}

    def first_60_days(comparison, metrics):
        s = seattle()
        frame, cols = eval_frame(s["candidate"], s["champion"])
        comp = compare_split(frame.iloc[:60], s["classes"], cols, METRICS_CFG, "sun")
        comp["baselines"] = compare_baselines(
            frame.iloc[:60], s["classes"], "sun", s["persistence"][:60], METRICS_CFG
        )
        comparison["splits"]["production"] = comp
        metrics["production"].update(n=60, accuracy=0.5, macro_f1=0.3)

    result = judge("better", edit=first_60_days)
    assert by_name(result)["min_samples"].status == "inconclusive"
    assert result.verdict != "pass"


def test_drift_over_the_limit_fails():
    gates = {**GATES, "drift": {"max_drifted_share": 0.5, "columns": ["temp_max"]}}
    drifted = {**DRIFT, "drifted_share": 0.6}
    result = judge("better", gates=gates, drift=drifted)
    assert result.verdict == "fail"
    assert not_passing(result) == {"drift:max_drifted_share": "fail"}
    assert judge("better", gates=gates).verdict == "pass"  # 0.25 <= 0.5

    gates["drift"]["columns"] = ["weather", "humidity"]
    assert not_passing(judge("better", gates=gates)) == {
        "drift:column:weather": "fail",
        "drift:column:humidity": "fail",  # not in drift.json
    }
    report_only = by_name(judge("better"))["drift:max_drifted_share"]
    assert (report_only.status, report_only.reason) == ("pass", "report only")
    missing = judge("better", drift=None)
    assert not_passing(missing) == {"drift:max_drifted_share": "fail"}
    assert by_name(missing)["drift:max_drifted_share"].reason == "reports/drift.json missing"


def test_first_model_policies():
    result = judge("first", champion=None)
    assert result.policy == "first_model:floors_only"
    assert result.verdict == "pass" and result.champion is None
    names = set(by_name(result))
    assert "first_model" in names
    assert not any(n.startswith(("vs_champion", "slice:")) for n in names)
    strict = judge("first", champion=None, gates={**GATES, "first_model": "fail"})
    assert strict.policy == "first_model:fail"
    assert not_passing(strict) == {"first_model": "fail"}


def test_floors_treat_ece_as_a_maximum():
    floors = {"accuracy": 0.4, "ece": 0.1}
    checks = by_name(judge("better", gates={**GATES, "floors": floors}))  # ece is 0.12
    assert checks["floor:ece"].status == "fail"
    assert checks["floor:accuracy"].status == "pass"
    assert by_name(judge("better", gates={**GATES, "floors": {"ece": 0.2}}))["floor:ece"].passed


def test_staleness():
    def age(max_days, as_of, time_max="2015-12-31"):
        splits = {**SCHEMA["splits"], "production": split_info(549, "2014-07-01", time_max)}
        gates = {**GATES, "max_data_age_days": max_days, "as_of": as_of}
        return by_name(judge("better", gates, schema={**SCHEMA, "splits": splits}))["staleness"]

    assert age(90, "2016-03-01").status == "pass"  # 61 days
    assert age(30, "2016-03-01").value == 61 and age(30, "2016-03-01").status == "fail"
    assert "no time column" in age(30, "2016-03-01", time_max=None).reason
    assert "staleness" not in by_name(judge("better"))  # null disables
