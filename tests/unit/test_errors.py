"""Error analysis: mispredictions typed, summarised, and filterable by type, time and impact."""

from __future__ import annotations

import pandas as pd
import pytest

from closedloop.errors import DataError
from closedloop.evaluation.error_analysis import mispredictions, query, summary


def test_every_misprediction_is_typed(sun_eval_frame):
    errors = mispredictions(sun_eval_frame, "production", "date")
    wrong = (sun_eval_frame.actual != "sun").sum()
    assert len(errors) == wrong == 154  # 151 fog + 3 rain days in 2014
    assert set(errors.failure_type) == {"fog→sun", "rain→sun"}
    assert (errors.impact == errors.confidence).all()
    text = summary(errors, len(sun_eval_frame))
    assert text.startswith("# Error analysis: 154 of 365 predictions wrong")
    assert text.index("fog→sun") < text.index("rain→sun")  # ordered by impact
    for heading in ("Errors by month", "Errors by slice: season", "Errors by confidence"):
        assert heading in text


def test_filters_by_type_time_impact_and_slice(sun_eval_frame):
    errors = mispredictions(sun_eval_frame, "production", "date")
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
