"""The metrics are declared once: config, statistics, the gate and the report read one registry,
and a metric's two computations (from probabilities, from labels) agree on real predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from vega_datasets import local_data

from closedloop import metrics
from closedloop.artefacts.evaluation import Metrics
from closedloop.config import compose
from closedloop.errors import ConfigError
from closedloop.evaluation.statistics import metric_value, paired_delta_ci
from closedloop.gating.gate import _floors
from closedloop.metrics.base import Metric
from tests.conftest import ROOT

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]


def test_the_multiclass_metrics_and_their_directions():
    declared = {m.name: (m.higher_is_better, m.comparable) for m in metrics.task_metrics()}
    assert declared == {
        "accuracy": (True, True),
        "macro_f1": (True, True),
        "ece": (False, False),  # needs probabilities: no paired bootstrap over labels
    }
    assert metrics.names(comparable=True) == ("accuracy", "macro_f1")
    assert metrics.get("ece").label == "ece (lower is better)"
    assert metrics.get("ece").meets(0.1, 0.2) and not metrics.get("accuracy").meets(0.1, 0.2)
    with pytest.raises(ConfigError, match="unknown metric 'auc'"):
        metrics.get("auc")
    with pytest.raises(ConfigError, match="unknown task 'ranking'"):
        metrics.task_metrics("ranking")


def test_probabilities_and_labels_give_the_same_value():
    """evaluate's headline value (torchmetrics) and the bootstrap's (numpy) are one metric."""
    df = local_data.seattle_weather()
    classes = sorted(df.weather.unique())
    train, test = train_test_split(df, test_size=0.4, random_state=0, stratify=df.weather)
    model = LogisticRegression(max_iter=500).fit(train[FEATURES], train.weather)
    probs = torch.tensor(model.predict_proba(test[FEATURES]), dtype=torch.float32)
    target = torch.tensor([classes.index(c) for c in test.weather])
    pred = probs.argmax(1).numpy()
    for m in metrics.task_metrics():
        if m.comparable:
            from_probs = m.score(probs, target, {"ece_bins": 15})
            assert metric_value(m.name, target.numpy(), pred) == pytest.approx(from_probs, abs=1e-6)


def test_config_accepts_exactly_the_registry(tmp_path):
    conf = ROOT / "conf"
    assert compose(["+gates.floors.ece=0.3"], conf_dir=conf)["gates"]["floors"]["ece"] == 0.3
    with pytest.raises(
        ConfigError,
        match=r"metrics.compare\[1\]: must be one of .*'accuracy', 'macro_f1'.*, got 'ece'",
    ):
        compose(["metrics.compare=[accuracy,ece]"], conf_dir=conf)
    with pytest.raises(
        ConfigError,
        match=r"gates\.floors\.auc: must be one of .*'accuracy', 'macro_f1', 'ece'.*, got 'auc'",
    ):
        compose(["+gates.floors.auc=0.5"], conf_dir=conf)
    with pytest.raises(ConfigError, match="vs_champion"):
        compose(["gates.vs_champion=[{metric: ece}]"], conf_dir=conf)


def test_a_new_metric_needs_only_its_declaration(monkeypatch):
    """Declared in the registry, a metric is bootstrapped and gated in its own direction."""
    error_rate = Metric(
        "error_rate",
        False,
        lambda probs, target, cfg: float((probs.argmax(1) != target).float().mean()),
        lambda y, pred, k: (y != pred).mean(axis=-1),
    )
    monkeypatch.setitem(metrics.TASKS, "multiclass", (*metrics.TASKS["multiclass"], error_rate))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    champ = np.where(rng.random(400) < 0.6, y, (y + 1) % 3)
    cand = np.where(rng.random(400) < 0.8, y, (y + 1) % 3)
    out = paired_delta_ci("error_rate", y, cand, champ, 0.95, 500, 0)
    assert out["delta"] == pytest.approx(out["candidate"] - out["champion"], abs=1e-6)
    assert out["ci_high"] < 0  # fewer errors: a negative delta, confidently
    split = Metrics.model_validate({"production": {"n": 400, "error_rate": 0.3}})["production"]
    checks = _floors(split, {"error_rate": 0.25}, "multiclass")
    assert [(c.status, c.reason) for c in checks] == [
        ("fail", "0.3000 must be <= 0.25 (lower is better)")
    ]
