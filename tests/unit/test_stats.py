"""Paired statistics agree with scikit-learn, scipy and statsmodels on real predictions, and
are deterministic for a fixed seed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, f1_score
from sklearn.tree import DecisionTreeClassifier
from statsmodels.stats.multitest import multipletests

from closedloop.errors import DataError
from closedloop.evaluation.statistics import (
    compare_split,
    holm,
    mcnemar,
    metric_value,
    paired_delta_ci,
)
from tests.fixtures import METRICS_CFG, eval_frame, seattle


def codes(*arrays):
    classes = seattle()["classes"]
    return [np.array([classes.index(v) for v in a]) for a in arrays]


@pytest.fixture(scope="module")
def digits_predictions():
    """Ten classes: a shallow tree predicts a subset of labels, exercising the label union."""
    x, y = load_digits(return_X_y=True)
    preds = [
        DecisionTreeClassifier(max_depth=d, random_state=0).fit(x[::2], y[::2]).predict(x[1::2])
        for d in (2, 4)
    ]
    return y[1::2], preds


def test_metrics_agree_with_sklearn(digits_predictions):
    s = seattle()
    y, cand, champ = codes(s["prod"].weather, s["candidate"], s["champion"])
    cases = [(y, cand), (y, champ), *((digits_predictions[0], p) for p in digits_predictions[1])]
    for y_true, pred in cases:
        assert metric_value("accuracy", y_true, pred) == pytest.approx(
            accuracy_score(y_true, pred), abs=1e-12
        )
        assert metric_value("macro_f1", y_true, pred) == pytest.approx(
            f1_score(y_true, pred, average="macro", zero_division=0), abs=1e-12
        )
    # A predicted label absent from y counts, as in sklearn's default labels.
    assert metric_value("macro_f1", [0, 0, 1], [0, 2, 1]) == pytest.approx(
        f1_score([0, 0, 1], [0, 2, 1], average="macro", zero_division=0)
    )


def test_compare_split_overall_matches_sklearn_and_is_json():
    s = seattle()
    frame, cols = eval_frame(s["candidate"], s["champion"])
    out = compare_split(frame, s["classes"], cols, METRICS_CFG, s["baseline_class"])
    y = s["prod"].weather
    acc = out["overall"]["accuracy"]
    assert acc["candidate"] == pytest.approx(accuracy_score(y, s["candidate"]), abs=1e-6)
    assert acc["champion"] == pytest.approx(accuracy_score(y, s["champion"]), abs=1e-6)
    assert acc["delta"] == pytest.approx(acc["candidate"] - acc["champion"], abs=2e-6)
    assert acc["ci_low"] <= acc["delta"] <= acc["ci_high"]
    f1 = out["overall"]["macro_f1"]["candidate"]
    assert f1 == pytest.approx(
        f1_score(y, s["candidate"], average="macro", zero_division=0), abs=1e-6
    )
    assert out["baseline"]["accuracy"] == pytest.approx((y == s["baseline_class"]).mean(), abs=1e-6)
    assert out["n"] == len(y) and out["has_champion"]
    assert set(out["slices"]) == {"season", "true_class", "precipitation"}
    winter = out["slices"]["season"]["winter"]
    assert winter["n"] == int((frame.slice_season == "winter").sum())
    assert set(winter) == {"n", "accuracy", "macro_f1", "mcnemar", "p_holm"}
    assert winter["p_holm"] >= winter["mcnemar"]["p_value"]
    json.dumps(out, allow_nan=False)
    assert compare_split(frame, s["classes"], cols, METRICS_CFG, s["baseline_class"]) == out


def test_compare_split_without_champion_has_nulls():
    s = seattle()
    frame, cols = eval_frame(s["candidate"])
    out = compare_split(frame, s["classes"], cols, METRICS_CFG, s["baseline_class"])
    assert not out["has_champion"] and out["mcnemar"] is None
    acc = out["overall"]["accuracy"]
    assert acc["candidate"] > 0
    assert [acc[k] for k in ("champion", "delta", "ci_low", "ci_high")] == [None] * 4
    fog = out["slices"]["true_class"]["fog"]
    assert fog["mcnemar"] is None and fog["p_holm"] is None


def test_compare_split_edge_cases():
    cfg = METRICS_CFG
    empty = pd.DataFrame({"actual": [], "predicted": [], "slice_s": []})
    assert compare_split(empty, ["a", "b"], ["slice_s"], cfg, "a")["overall"] == {}
    # A label the model does not know (say, a new class in feedback) is scored, not dropped.
    odd = pd.DataFrame({"actual": ["a", "new", "b"], "predicted": ["a", "b", "b"]})
    out = compare_split(odd, ["a", "b"], [], cfg, "a")
    assert out["overall"]["accuracy"]["candidate"] == pytest.approx(2 / 3, abs=1e-6)
    with pytest.raises(DataError, match=r"slice_season"):
        compare_split(odd, ["a", "b"], ["slice_season"], cfg, "a")


def test_bootstrap_is_deterministic_and_seeded():
    s = seattle()
    y, cand, champ = codes(s["prod"].weather, s["candidate"], s["champion"])
    args = ("macro_f1", y, cand, champ, 0.95)
    first = paired_delta_ci(*args, 500, 7)
    assert paired_delta_ci(*args, 500, 7) == first
    assert paired_delta_ci(*args, 500, 8) != first
    assert first["ci_low"] <= first["delta"] <= first["ci_high"]


def test_bootstrap_degenerate_inputs_do_not_crash():
    y, pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    same = paired_delta_ci("accuracy", y, pred, pred, 0.95, 200, 0)
    assert (same["delta"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    one = paired_delta_ci("accuracy", [1], [1], [0], 0.95, 200, 0)
    assert (one["delta"], one["ci_low"], one["ci_high"]) == (1.0, 1.0, 1.0)


def test_mcnemar_counts_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    cand = np.array([0, 0, 0, 1, 1, 0, 1])  # right on 0,1,2,4,6
    champ = np.array([1, 1, 0, 0, 1, 0, 1])  # right on 2,3,4,6
    out = mcnemar(y, cand, champ)
    assert (out["b"], out["c"]) == (2, 1)  # b: examples 0 and 1; c: example 3
    assert out["p_value"] == pytest.approx(1.0)  # P(X<=1 or X>=2 | Bin(3, 1/2)) = 1
    y, cand, champ = np.zeros(10, int), np.zeros(10, int), np.ones(10, int)
    assert mcnemar(y, cand, champ) == {"b": 10, "c": 0, "p_value": pytest.approx(2 / 1024)}
    assert mcnemar(y, cand, cand)["p_value"] == 1.0
    assert mcnemar(y, cand, champ)["p_value"] == pytest.approx(binomtest(10, 10).pvalue)


def test_holm_matches_statsmodels_and_hand():
    p = {"a": 0.01, "b": 0.04, "c": 0.03}
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 -> max(0.04, 0.06) = 0.06
    assert holm(p) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert list(holm(p).values()) == pytest.approx(
        multipletests(list(p.values()), method="holm")[1]
    )
    assert holm({}) == {}
