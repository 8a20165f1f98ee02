"""Error analysis: mispredictions typed, summarised, and filterable by type, time and impact."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from closedloop.cli import cli
from closedloop.errors import DataError
from closedloop.evaluation.error_analysis import mispredictions, query, summary
from closedloop.paths import ERRORS_MD, ERRORS_TABLE
from pipelines.errors import main


@pytest.fixture
def eval_frame():
    """Real labels of the Seattle 2014 window with a predictor that always says 'sun'."""
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    df = df[(df.date >= "2014-01-01") & (df.date <= "2014-12-31")].reset_index(drop=True)
    return pd.DataFrame(
        {
            "row": range(len(df)),
            "date": df.date.dt.strftime("%Y-%m-%d"),
            "actual": df.weather,
            "predicted": "sun",
            "confidence": [0.55 + 0.4 * (i % 2) for i in range(len(df))],
            "slice_season": df.date.dt.month.map(
                lambda m: "winter" if m in (12, 1, 2) else "other"
            ),
        }
    )


def test_every_misprediction_is_typed(eval_frame):
    errors = mispredictions(eval_frame, "production", "date")
    wrong = (eval_frame.actual != "sun").sum()
    assert len(errors) == wrong == 154  # 151 fog + 3 rain days in 2014
    assert set(errors.failure_type) == {"fog→sun", "rain→sun"}
    assert (errors.impact == errors.confidence).all()
    text = summary(errors, len(eval_frame))
    assert text.startswith("# Error analysis: 154 of 365 predictions wrong")
    assert text.index("fog→sun") < text.index("rain→sun")  # ordered by impact
    for heading in ("Errors by month", "Errors by slice: season", "Errors by confidence"):
        assert heading in text


def test_filters_by_type_time_impact_and_slice(eval_frame):
    errors = mispredictions(eval_frame, "production", "date")
    rain = query(errors, failure_type="rain->sun")
    assert len(rain) == 3
    window = query(errors, since="2014-03-01", until="2014-03-31")
    assert window.time.min() >= pd.Timestamp("2014-03-01") and window.time.max() <= pd.Timestamp(
        "2014-03-31"
    )
    sure = query(errors, min_impact=0.9)
    assert len(sure) > 0 and (sure.impact >= 0.9).all()
    winter = query(errors, slice_filter="season=winter")
    assert (winter.slice_season == "winter").all()
    with pytest.raises(DataError, match="TRUE->PREDICTED"):
        query(errors, failure_type="rain")
    with pytest.raises(DataError, match="NAME=VALUE"):
        query(errors, slice_filter="colour=red")


def test_stage_and_cli(eval_frame, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/eval").mkdir(parents=True)
    eval_frame.to_csv(tmp_path / "reports/eval/production.csv", index=False)
    main()
    assert pd.read_parquet(ERRORS_TABLE).shape[0] == 154
    assert ERRORS_MD.read_text().startswith("# Error analysis")
    shown = CliRunner().invoke(cli, ["errors", "show", "--type", "rain->sun"])
    assert shown.exit_code == 0 and "3 matching error(s)" in shown.output
