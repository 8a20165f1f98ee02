"""Baselines on the real Seattle weather: the dummy, the best constant in hindsight and
persistence (the day before), and the gate that can require beating them."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
from vega_datasets import local_data

from closedloop.artefacts.champion import ChampionEntry
from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison, Metrics
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.errors import ConfigError
from closedloop.evaluation.baselines import NAMES, compare_baselines, persistence_labels
from closedloop.gating import gate
from tests.fixtures import CHAMPION, DRIFT, METRICS_CFG, PARAMS, SCHEMA, gate_reports, seattle

GATES = PARAMS["gates"]
SLICES = [s["name"] for s in PARAMS["slices"]["slices"]]


def test_the_gate_config_names_exactly_the_baselines_evaluate_writes():
    from closedloop.config.schema import BaselineGate

    assert BaselineGate.model_fields["baselines"].annotation.__args__[0].__args__ == NAMES


def test_persistence_is_the_previous_day_looking_back_into_history():
    df = local_data.seattle_weather()
    history, window = df[df.date < "2014-07-01"], df[df.date >= "2014-07-01"]
    shuffled = window.sample(frac=1, random_state=0)
    labels = persistence_labels(shuffled, [history], "weather", "date")
    by_date = dict(zip(df.date, df.weather, strict=True))
    for date, label in zip(shuffled.date, labels, strict=True):
        assert label == by_date[date - pd.Timedelta(days=1)]
    assert (
        labels[list(shuffled.date).index(pd.Timestamp("2014-07-01"))]
        == by_date[pd.Timestamp("2014-06-30")]
    )
    assert persistence_labels(window.iloc[:3], [], "weather", "date")[0] == ""  # nothing before


def test_dummy_and_best_constant_on_the_real_window():
    s = seattle()
    y = s["prod"].weather.to_numpy()
    out = gate_reports("worse")[0]["splits"]["production"]["baselines"]
    assert set(out) == set(NAMES)
    dummy = out["dummy"]
    assert (
        dummy["description"] == f"always the training split's majority class, {s['baseline_class']}"
    )
    assert dummy["metrics"]["accuracy"]["baseline"] == pytest.approx(
        (y == s["baseline_class"]).mean(), abs=1e-6
    )
    best = out["best_constant"]
    shares = pd.Series(y).value_counts(normalize=True)
    assert best["hindsight"] and best["metrics"]["accuracy"]["constant"] == shares.idxmax()
    assert best["metrics"]["accuracy"]["baseline"] == pytest.approx(shares.max(), abs=1e-6)
    # no constant does better than the best one, whichever class it is
    for c in shares.index:
        assert (y == c).mean() <= best["metrics"]["accuracy"]["baseline"] + 1e-9
    persistence = out["persistence"]["metrics"]["accuracy"]
    assert persistence["baseline"] == pytest.approx((y == s["persistence"]).mean(), abs=1e-6)
    for entry in (dummy, best, out["persistence"]):
        for e in entry["metrics"].values():
            assert e["ci_low"] <= e["delta"] <= e["ci_high"]


def test_no_time_column_means_no_persistence_and_a_required_one_fails():
    s = seattle()
    frame = pd.DataFrame({"actual": s["prod"].weather, "predicted": s["candidate"]})
    out = compare_baselines(frame, s["classes"], "sun", None, METRICS_CFG)
    assert set(out) == {"dummy", "best_constant"}


def judge(scenario: str, baselines: list[str], champion=CHAMPION):
    comparison, metrics = copy.deepcopy(gate_reports(scenario))
    spec = {"metric": "accuracy", "baselines": baselines, "margin": 0.0}
    return gate.judge(
        Comparison.model_validate(comparison),
        Metrics.model_validate(metrics),
        DriftReport.model_validate(DRIFT),
        SnapshotSchema.model_validate(SCHEMA),
        {**GATES, "beat_baseline": spec, "vs_champion": [], "slice_regression": None},
        None if champion is None else ChampionEntry.model_validate(champion),
        "a" * 64,
        slice_names=SLICES,
        confidence_level=0.95,
    )


def test_a_candidate_worse_than_the_best_constant_fails_when_the_gate_requires_it():
    """The 2012-2013 logistic regression on 2014-07..2015-12: 0.470 against always 'sun'."""
    comp = gate_reports("worse")[0]["splits"]["production"]["baselines"]["best_constant"]
    acc = comp["metrics"]["accuracy"]
    assert acc["candidate"] < acc["baseline"] and acc["ci_high"] < 0  # really worse
    result = judge("worse", ["best_constant"])
    check = {c.name: c for c in result.checks}["beat_baseline:best_constant:accuracy"]
    assert check.status == "fail" and result.verdict == "fail"
    assert "always sun: the best single class on these rows, in hindsight" in check.reason
    assert check.value == acc["ci_low"] and check.threshold == 0.0
    # the better candidate beats both constants on its CI, and loses to persistence
    better = {c.name: c.status for c in judge("better", ["dummy", "best_constant"]).checks}
    assert better["beat_baseline:best_constant:accuracy"] == "pass"
    assert {c.name: c.status for c in judge("better", ["persistence"]).checks}[
        "beat_baseline:persistence:accuracy"
    ] == "fail"


def test_a_required_persistence_baseline_without_a_time_column_fails_and_says_why():
    comparison, metrics = copy.deepcopy(gate_reports("better"))
    del comparison["splits"]["production"]["baselines"]["persistence"]  # as without time_column
    result = gate.judge(
        Comparison.model_validate(comparison),
        Metrics.model_validate(metrics),
        DriftReport.model_validate(DRIFT),
        SnapshotSchema.model_validate(SCHEMA),
        {
            **GATES,
            "beat_baseline": {"metric": "accuracy", "baselines": ["persistence"], "margin": 0.0},
        },
        ChampionEntry.model_validate(CHAMPION),
        "a" * 64,
        slice_names=SLICES,
        confidence_level=0.95,
    )
    check = {c.name: c for c in result.checks}["beat_baseline:persistence:accuracy"]
    assert check.status == "fail" and "no time_column" in check.reason


def test_unknown_baseline_in_the_gate_config_is_one_line():
    from closedloop.config import compose
    from tests.conftest import ROOT

    with pytest.raises(ConfigError) as e:
        compose(["gates.beat_baseline.baselines=[dummy,yesterday]"], conf_dir=ROOT / "conf")
    assert "\n" not in str(e.value) and "gates.beat_baseline.baselines" in str(e.value)
