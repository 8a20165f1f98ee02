"""Binary and regression tasks on real offline data (breast cancer, diabetes): the metrics
agree with scikit-learn on the per-example outputs, and the gate judges them on the CI bound
on the harmful side: a better candidate passes, a CI across the margin is inconclusive, a
slice regression fails, a missing metric fails."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison, Metrics
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.config import ConfigError, compose
from closedloop.evaluation.baselines import compare_baselines
from closedloop.evaluation.evaluate import predictions_frame, score
from closedloop.evaluation.statistics import compare_split, metric_value
from closedloop.gating import gate
from closedloop.metrics import binary
from closedloop.reporting.figures import figures, forest_rows
from tests.conftest import ROOT
from tests.fixtures import CHAMPION, split_info, task_case, task_frame

NO_DRIFT = {
    "n_columns": 0,
    "drifted_count": 0,
    "drifted_share": 0.0,
    "dataset_drift": False,
    "columns": {},
    "top_drifted": [],
    "reference": {"rows": 1, "sampled_rows": 1, "source": "champion", "version": "v1.0.0"},
    "current": {"rows": 1, "sampled_rows": 1},
}


# ------------------------------------------------------------- metrics agree with sklearn
def eval_table(dataset: str):
    """reports/eval/'s table for the candidate, as evaluate's predictions_frame writes it."""
    case = task_case(dataset)
    ds = case["params"]["dataset"]
    config = {**ds, "features": [], "classes": ds["classes"] or []}
    p = torch.tensor(case["candidate"], dtype=torch.float32)
    outputs = p if ds["task"] == "regression" else torch.stack([1 - p, p], dim=1)
    threshold = case["params"]["metrics"]["threshold"]
    return predictions_frame(case["test"], outputs, config, threshold), outputs


def test_regression_metrics_agree_with_sklearn():
    frame, outputs = eval_table("diabetes")
    assert list(frame.columns[:4]) == ["row", "actual", "predicted", "residual"]
    y, pred = frame["actual"].to_numpy(), frame["predicted"].to_numpy()
    expected = {
        "mae": skm.mean_absolute_error(y, pred),
        "rmse": skm.mean_squared_error(y, pred) ** 0.5,
        "r2": skm.r2_score(y, pred),
    }
    target = torch.tensor(y)
    scored = score(outputs, target, [], {}, "regression")  # torchmetrics, the headline
    for name, value in expected.items():
        assert scored[name] == pytest.approx(value, abs=1e-3)  # float32 predictions
        assert metric_value(name, y, pred, "regression") == pytest.approx(value, rel=1e-9)


def test_binary_metrics_agree_with_sklearn():
    frame, outputs = eval_table("breast_cancer")
    threshold = task_case("breast_cancer")["params"]["metrics"]["threshold"]
    assert {"actual", "predicted", "p_benign", "p_malignant"} <= set(frame.columns)
    y = (frame["actual"] == "malignant").to_numpy().astype(int)
    s = frame["p_malignant"].to_numpy()
    said = (s >= threshold).astype(int)
    assert ((frame["predicted"] == "malignant").to_numpy() == said.astype(bool)).all()
    expected = {
        "roc_auc": skm.roc_auc_score(y, s),
        "pr_auc": skm.average_precision_score(y, s),
        "precision": skm.precision_score(y, said),
        "recall": skm.recall_score(y, said),
        "f1": skm.f1_score(y, said),
    }
    scored = score(
        outputs, torch.tensor(y), ["benign", "malignant"], {"threshold": threshold}, "binary"
    )
    for name, value in expected.items():
        assert scored[name] == pytest.approx(value, abs=1e-4), name
        assert metric_value(name, y, s, "binary", threshold) == pytest.approx(value, abs=1e-9), name


def test_batched_rank_aucs_agree_with_sklearn_on_every_resample_with_ties():
    """The bootstrap's AUCs: one call over a (resamples, n) batch, ties included."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (50, 300))
    s = np.round(rng.random((50, 300)), 1)  # many ties
    auc = binary.roc_auc_on_scores(y, s, 0.5)
    ap = binary.pr_auc_on_scores(y, s, 0.5)
    for i in range(len(y)):
        assert auc[i] == pytest.approx(skm.roc_auc_score(y[i], s[i]), abs=1e-12)
        assert ap[i] == pytest.approx(skm.average_precision_score(y[i], s[i]), abs=1e-12)
    assert np.isnan(binary.roc_auc_on_scores(np.zeros((1, 5)), s[:1, :5], 0.5)).all()
    # What the bootstrap resamples for them: dense ranks, ranked once; the same values.
    ranks = np.unique(s, return_inverse=True)[1].reshape(s.shape)
    assert np.array_equal(binary.roc_auc_on_scores(y, ranks, 0.5), auc)
    assert np.allclose(binary.pr_auc_on_scores(y, ranks, 0.5), ap, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------- the gate
def comparison_of(dataset: str, candidate, champion) -> dict:
    """reports/comparison.json for these outputs on the dataset's test rows."""
    case = task_case(dataset)
    params = case["params"]
    ds, task = params["dataset"], params["dataset"]["task"]
    frame, cols = task_frame(dataset, candidate, champion)
    if task == "regression":
        baseline = float(case["train"][ds["target"]].mean())
    else:
        baseline = str(case["train"][ds["target"]].value_counts().idxmax())
    comp = compare_split(frame, ds["classes"] or [], cols, params["metrics"], baseline, task)
    comp["baselines"] = compare_baselines(
        frame, ds["classes"] or [], baseline, None, params["metrics"], task
    )
    return {
        "champion": None,
        "task": task,
        "baseline_class": None if task == "regression" else baseline,
        "splits": {"production": comp},
    }


def judge(dataset: str, candidate, champion, gates=None, edit=None):
    case = task_case(dataset)
    params = case["params"]
    ds, task = params["dataset"], params["dataset"]["task"]
    comparison = comparison_of(dataset, candidate, champion)
    comp = comparison["splits"]["production"]
    metrics = {
        "production": {"n": comp["n"], **{m: v["candidate"] for m, v in comp["overall"].items()}}
    }
    if edit:
        edit(comparison, metrics)
    schema = {
        "dataset": dataset,
        "task": task,
        "source": dataset,
        "target": ds["target"],
        "time_column": None,
        "features": [],
        "classes": ds["classes"] or [],
        "splits": {"production": split_info(comp["n"])},
        "feedback_files": [],
        "feedback_ignored_files": [],
        "feedback": {},
        "feature_types": {"numeric": [], "categorical": []},
        "missing": {},
        "dataset_rows": {
            "rows_in": comp["n"],
            "kept": comp["n"],
            "quarantined": 0,
            "unused": 0,
            "reasons": {},
        },
        "data_hash": "d" * 64,
    }
    return gate.judge(
        Comparison.model_validate(comparison),
        Metrics.model_validate(metrics),
        DriftReport.model_validate(NO_DRIFT),
        SnapshotSchema.model_validate(schema),
        gates or params["gates"],
        gate.ChampionEntry.model_validate(CHAMPION),
        "a" * 64,
        slice_names=[s["name"] for s in params["slices"]["slices"]],
        confidence_level=params["metrics"]["confidence_level"],
        task=task,
    )


def statuses(result) -> dict:
    return {c.name: c.status for c in result.checks}


@pytest.mark.parametrize("dataset", ["diabetes", "breast_cancer"])
def test_better_candidate_passes(dataset):
    case = task_case(dataset)
    result = judge(dataset, case["candidate"], case["champion"])
    assert result.verdict == "pass", {c.name: c.reason for c in result.checks if not c.passed}
    names = statuses(result)
    assert any(n.startswith("vs_champion:") for n in names)
    assert any(n.startswith("slice:") for n in names)
    assert any(n.startswith("beat_baseline:") for n in names)


def test_regression_judged_on_the_upper_bound_of_rmse():
    """RMSE: lower is better, so non-inferiority looks at the CI's upper bound (harmful side)."""
    case = task_case("diabetes")
    result = judge("diabetes", case["candidate"], case["champion"])
    check = next(c for c in result.checks if c.name == "vs_champion:rmse")
    assert check.threshold == 3.0 and check.value < 0  # the upper bound: still an improvement
    assert "upper bound < +3" in check.reason
    # The same models the other way round: RMSE rises by 2.5 to 10.7, which straddles +3...
    worse = judge("diabetes", case["champion"], case["candidate"])
    assert statuses(worse)["vs_champion:rmse"] == "inconclusive"
    assert statuses(worse)["floor:rmse"] == "pass"  # 63 is under the 95 ceiling
    # ... and with no margin at all, every rise is harm: it fails.
    gates = copy.deepcopy(case["params"]["gates"])
    gates["vs_champion"] = [{"metric": "rmse", "mode": "non_inferiority", "margin": 0.0}]
    strict = judge("diabetes", case["champion"], case["candidate"], gates=gates)
    check = next(c for c in strict.checks if c.name == "vs_champion:rmse")
    assert check.status == "fail" and check.value > 10 and "all of it >= +0" in check.reason


@pytest.mark.parametrize(("dataset", "metric"), [("diabetes", "mae"), ("breast_cancer", "roc_auc")])
def test_ci_across_the_margin_is_inconclusive(dataset, metric):
    case = task_case(dataset)
    gates = copy.deepcopy(case["params"]["gates"])
    gates["vs_champion"] = [{"metric": metric, "mode": "superiority", "margin": 0.0}]
    result = judge(dataset, case["candidate"], case["near"], gates=gates)
    check = next(c for c in result.checks if c.name == f"vs_champion:{metric}")
    assert check.status == "inconclusive", check.reason
    assert "straddles" in check.reason
    assert result.verdict == "inconclusive"


def test_regression_slice_regression_fails():
    """Worse by 40 on every severe case: MAE rises there, significantly (Wilcoxon, Holm)."""
    case = task_case("diabetes")
    cand = case["candidate"].copy()
    y = case["test"]["progression"].to_numpy()
    severe = (case["slices"]["slice_progression"] == "[200, 400)").to_numpy()
    cand[severe] += 40 * np.sign(cand[severe] - y[severe] + 1e-9)
    result = judge("diabetes", cand, case["champion"])
    failed = {c.name: c.reason for c in result.checks if c.status == "fail"}
    assert "slice:progression=[200, 400)" in failed, failed
    assert "mae rises" in failed["slice:progression=[200, 400)"]
    assert result.verdict == "fail"


def test_binary_slice_regression_fails():
    """Scores reversed on large tumours: F1 collapses there, significantly (McNemar, Holm)."""
    case = task_case("breast_cancer")
    cand = case["candidate"].copy()
    large = (case["slices"]["slice_mean_radius"] == "[15, 100)").to_numpy()
    cand[large] = 1 - cand[large]
    result = judge("breast_cancer", cand, case["champion"])
    failed = {c.name for c in result.checks if c.status == "fail"}
    assert "slice:mean_radius=[15, 100)" in failed
    assert result.verdict == "fail"


@pytest.mark.parametrize(
    ("dataset", "metric"), [("diabetes", "rmse"), ("breast_cancer", "roc_auc")]
)
def test_missing_metric_fails(dataset, metric):
    case = task_case(dataset)

    def drop(comparison, metrics):
        del comparison["splits"]["production"]["overall"][metric]
        del metrics["production"][metric]

    result = judge(dataset, case["candidate"], case["champion"], edit=drop)
    s = statuses(result)
    assert s[f"vs_champion:{metric}"] == "fail"
    assert s[f"floor:{metric}"] == "fail"
    assert result.verdict == "fail"


# -------------------------------------------------------------------------- the config
def test_an_unknown_task_is_one_line_naming_file_and_key(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    path = conf / "dataset" / "diabetes.yaml"
    path.write_text(path.read_text().replace("task: regression", "task: ranking"))
    with pytest.raises(ConfigError) as e:
        compose(["dataset=diabetes"], conf_dir=conf)
    msg = str(e.value)
    assert "\n" not in msg
    assert "conf/dataset/diabetes.yaml" in msg and "dataset.task" in msg and "ranking" in msg


def test_a_metric_of_another_task_is_refused_naming_the_file():
    with pytest.raises(ConfigError) as e:
        compose(["dataset=diabetes", "gates.beat_baseline.metric=accuracy"], conf_dir=ROOT / "conf")
    msg = str(e.value)
    assert "gates.beat_baseline" in msg and "not a regression metric" in msg


# ----------------------------------------------------------------------------- the report
def test_a_regression_report_plots_predicted_against_true_and_right_is_better(tmp_path):
    """A regression has no classes: the report drew a confusion matrix over every distinct
    value (diabetes: a 17 MB page that took 40 s), and its forest put a lower rmse, which is
    better, left of zero, where the caption says worse."""
    case = task_case("diabetes")
    comparison = Comparison.model_validate(
        comparison_of("diabetes", case["candidate"], case["champion"])
    )
    rows = {
        label: (est, low, high)
        for label, est, low, high in forest_rows(comparison, "production", "regression")[0]
    }
    rmse = comparison.splits["production"].overall["rmse"]
    assert rmse.delta < 0  # the candidate's rmse is the lower: it is the better
    assert rows["production: rmse vs champion (−Δ)"] == (-rmse.delta, -rmse.ci_high, -rmse.ci_low)
    r2 = comparison.splits["production"].overall["r2"]  # higher is better: as measured
    assert rows["production: r2 vs champion"] == (r2.delta, r2.ci_low, r2.ci_high)

    rng = np.random.default_rng(0)
    actual = np.round(rng.uniform(25, 350, 3000), -1)  # 34 distinct values, 3,000 rows
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    pd.DataFrame(
        {
            "row": range(3000),
            "actual": actual,
            "predicted": actual + rng.choice([-20.0, 0.0, 10.0], 3000),
            "champion_predicted": actual + rng.choice([-30.0, 0.0, 30.0], 3000),
        }
    ).to_csv(eval_dir / "production.csv", index=False)
    figs = figures(comparison, None, [], "production", [], "95%", "regression", eval_dir)
    assert [f.kind for f in figs] == ["forest", "predicted"]
    predicted = figs[1]
    assert len(predicted.svgs) == 2 and "Candidate left, champion right" in predicted.caption
    assert "2,000 rows, evenly spaced" in predicted.caption
    for svg in predicted.svgs:
        points = re.search(r'<g id="PathCollection_1">(.*?)</g>', svg, re.S).group(1)
        assert points.count("<use ") == 1500  # a point for every second row
        assert "exact (y = x)" in svg and len(svg) < 400_000
