"""evaluate's numbers agree with scikit-learn's, and slices label rows as declared."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from closedloop.errors import DataError
from closedloop.evaluation.evaluate import score
from closedloop.evaluation.slices import assign, slice_columns


@pytest.fixture(scope="module")
def real_predictions():
    """A real classifier's probabilities on the real Seattle production window."""
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    features = ["precipitation", "temp_max", "temp_min", "wind"]
    classes = sorted(df.weather.unique())
    train, prod = df[df.date < "2014-01-01"], df[df.date >= "2014-01-01"]
    clf = LogisticRegression(max_iter=500).fit(train[features], train.weather)
    probs = clf.predict_proba(prod[features])
    y = prod.weather.map({c: i for i, c in enumerate(classes)}).to_numpy()
    return torch.tensor(probs, dtype=torch.float32), torch.tensor(y), classes


def test_metrics_agree_with_sklearn(real_predictions):
    probs, y, classes = real_predictions
    out = score(probs, y, classes, {"ece_bins": 15, "threshold": 0.5})
    pred = probs.argmax(1).numpy()
    y = y.numpy()
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert out["macro_f1"] == pytest.approx(
        f1_score(y, pred, average="macro", zero_division=0), abs=1e-6
    )
    labels = list(range(len(classes)))
    p = precision_score(y, pred, labels=labels, average=None, zero_division=0)
    r = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    for i, c in enumerate(classes):
        assert out["per_class"][c]["precision"] == pytest.approx(p[i], abs=1e-6)
        assert out["per_class"][c]["recall"] == pytest.approx(r[i], abs=1e-6)
        assert out["per_class"][c]["support"] == int((y == i).sum())
    assert out["confusion_matrix"] == confusion_matrix(y, pred, labels=labels).tolist()


def test_ece_matches_its_definition(real_predictions):
    probs, y, classes = real_predictions
    conf, pred = probs.max(1)
    bins = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in itertools.pairwise(bins):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.float().mean() * abs((pred[m] == y[m]).float().mean() - conf[m].mean())
    assert score(probs, y, classes, {"ece_bins": 15, "threshold": 0.5})["ece"] == pytest.approx(
        float(ece), abs=1e-5
    )


COLUMNS = {"time_column": "date", "target": "weather"}


def test_slices_label_rows_as_declared():
    df = pd.DataFrame(
        {
            "date": pd.to_datetime(["2014-01-15", "2014-04-02", "2014-07-30", "2014-10-10"]),
            "weather": ["rain", "sun", "fog", "sun"],
            "precipitation": [0.0, 2.5, 12.0, -1.0],
        }
    )
    assert assign(df, {"name": "s", "by": "season"}, **COLUMNS).tolist() == [
        "winter",
        "spring",
        "summer",
        "autumn",
    ]
    assert assign(df, {"name": "m", "by": "month"}, **COLUMNS).tolist() == ["01", "04", "07", "10"]
    assert assign(df, {"name": "c", "by": "class"}, **COLUMNS).tolist() == df.weather.tolist()
    rng = {"name": "p", "by": "range", "column": "precipitation", "bins": [0.0, 0.1, 5.0, 1000.0]}
    assert assign(df, rng, **COLUMNS).tolist() == [
        "[0, 0.1)",
        "[0.1, 5)",
        "[5, 1000)",
        "out of range",
    ]
    cols = slice_columns(df, {"slices": [{"name": "season", "by": "season"}]}, **COLUMNS)
    assert list(cols.columns) == ["slice_season"]


def test_time_slice_without_time_column_is_a_clear_error():
    df = pd.DataFrame({"digit": ["1", "2"]})
    with pytest.raises(DataError, match="no time column"):
        assign(df, {"name": "season", "by": "season"}, time_column=None, target="digit")
