"""The monitor: windows, the label-free estimate, alerts, the page, the plots and its config."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from statsmodels.stats.proportion import proportion_confint

from closedloop.config import compose
from closedloop.errors import ConfigError
from closedloop.monitoring import alerts
from closedloop.monitoring.estimate import Calibration, fit
from closedloop.monitoring.monitor import monitor
from closedloop.monitoring.page import render
from closedloop.monitoring.windows import compute, window_start
from closedloop.reporting import plots
from closedloop.rollout.records import from_frames, read_records
from tests.conftest import ROOT

CLASSES = ["rain", "sun"]


def params(*overrides: str) -> dict:
    return compose(["monitor.drift.enabled=false", *overrides], conf_dir=ROOT / "conf")


def traffic(seed: int = 0, days: int = 21, per_day: int = 40, p_sun: float = 0.8) -> pd.DataFrame:
    """Requests whose probabilities are calibrated by construction: labels drawn from them."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.uniform(0, days * 24, n), unit="h"
    )
    p = np.clip(rng.beta(8, 2, n), 0.5, 0.99)
    sun_first = rng.random(n) < p_sun
    pred = np.where(sun_first, "sun", "rain")
    label = np.where(rng.random(n) < p, pred, np.where(pred == "sun", "rain", "sun"))
    has_label = rng.random(n) < 0.6
    probs = [
        json.dumps({pr: float(q), ("rain" if pr == "sun" else "sun"): float(1 - q)})
        for pr, q in zip(pred, p, strict=True)
    ]
    return pd.DataFrame(
        {
            "request_id": [f"m{seed}-{i}" for i in range(n)],
            "ts": ts,
            "prediction": pred,
            "probabilities": probs,
            "latency_ms": rng.lognormal(np.log(20), 0.4, n),
            "error": np.where(rng.random(n) < 0.02, "timeout", None),
            "label": np.where(has_label, label, None),
            "label_ts": (ts + pd.Timedelta(hours=5)).where(has_label),
        }
    )  # fmt: skip


def none_calibration() -> Calibration:
    return Calibration(method="none", source=None, n=0, ece=0.02, max_ece=0.1)


def test_windows_count_latency_errors_feedback_and_wilson_intervals():
    df = traffic()
    cfg = params("monitor.window=week")["monitor"]
    r = compute(df, cfg, none_calibration())
    assert [w.label for w in r.windows] == ["2024-W01", "2024-W02", "2024-W03"]
    assert sum(w.requests for w in r.windows) == len(df) == r.totals["requests"]
    starts = window_start(df["ts"], "week")
    first = df[starts == starts.min()]
    w = r.windows[0]
    assert w.requests == len(first)
    assert w.latency_p99_ms == pytest.approx(np.quantile(first["latency_ms"], 0.99), abs=1e-5)
    assert w.error_rate == pytest.approx(first["error"].notna().mean(), abs=1e-6)
    lab = first[first["label"].notna()]
    right = int((lab["label"] == lab["prediction"]).sum())
    low, high = proportion_confint(right, len(lab), alpha=0.05, method="wilson")
    assert (w.realised_accuracy, w.realised_low, w.realised_high) == pytest.approx(
        (right / len(lab), low, high), abs=1e-6
    )
    assert w.feedback_delay_hours == pytest.approx(5.0)
    assert sum(w.prediction_mix.values()) == pytest.approx(1.0, abs=1e-5)


def test_small_windows_are_marked_not_hidden():
    cfg = params("monitor.window=day", "monitor.min_requests=100", "monitor.min_labels=30")[
        "monitor"
    ]
    r = compute(traffic(per_day=40), cfg, none_calibration())
    assert len(r.windows) == 21 and all(w.too_small for w in r.windows)
    assert all(w.realised_accuracy is not None for w in r.windows)  # numbers kept
    html = render(r)
    assert "(too small)" in html and plots.count_svgs(html) >= 6


def test_the_estimate_tracks_realised_accuracy_when_probabilities_are_calibrated():
    cfg = params("monitor.window=week")["monitor"]
    r = compute(traffic(seed=3, per_day=200), cfg, none_calibration())
    for w in r.windows:
        assert w.realised_low <= w.estimated_accuracy <= w.realised_high, w
        assert abs(w.gap) < 0.05


def test_isotonic_calibration_fits_the_eval_outputs(tmp_path):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.4, 1.0, 2000)
    right = rng.random(2000) < conf - 0.2  # overconfident by 0.2
    frame = pd.DataFrame(
        {
            "actual": np.where(right, "sun", "rain"),
            "predicted": "sun",
            "p_sun": conf,
            "p_rain": 1 - conf,
        }
    )
    frame.to_csv(tmp_path / "val.csv", index=False)
    (tmp_path / "metrics.json").write_text(json.dumps({"val": {"ece": 0.2}}))
    cal = fit(
        {"calibration": "isotonic", "max_ece": 0.1}, tmp_path / "val.csv", tmp_path / "metrics.json"
    )
    assert cal.method == "isotonic" and cal.n == 2000
    assert cal(np.array([0.9]))[0] == pytest.approx(0.7, abs=0.06)
    assert not cal.reliable and "above the limit of 0.1" in cal.why_unreliable()
    none = fit({"calibration": "isotonic", "max_ece": 0.1}, tmp_path / "missing.csv", None)
    assert none.method == "none" and not none.reliable


def test_without_probabilities_the_page_says_what_it_shows_instead():
    df = traffic().drop(columns=["probabilities"])
    r = compute(df, params()["monitor"], none_calibration())
    assert not r.estimate.available and "a regression model" in r.estimate.note
    assert all(w.estimated_accuracy is None for w in r.windows)
    assert "no label-free accuracy" in render(r)


def test_alert_rules_fail_pass_and_judge_realised_accuracy_on_its_interval():
    cfg = params("monitor.window=week")["monitor"]
    r = compute(traffic(), cfg, none_calibration())
    rules = [
        {"name": "acc-floor", "metric": "estimated_accuracy", "below": 0.95},
        {"name": "errors", "metric": "error_rate", "above": 0.5},
        {"name": "real", "metric": "realised_accuracy", "below": r.windows[-1].realised_accuracy + 0.01},
    ]  # fmt: skip
    out = {a["rule"]: a for a in alerts.evaluate(r, rules)}
    assert out["acc-floor"]["failing"] and out["acc-floor"]["window"] == "2024-W03"
    assert out["acc-floor"]["title"].startswith("[closedloop monitor] acc-floor:")
    assert (
        out["acc-floor"]["marker"] in out["acc-floor"]["body"]
        and "| window |" in out["acc-floor"]["body"]
    )
    assert not out["errors"]["failing"]
    # the point estimate is below the floor, but its Wilson interval is not wholly below it
    assert not out["real"]["failing"] and out["real"]["value"] == r.windows[-1].realised_high


def test_monitor_reads_exported_partitions_and_writes_json_page_and_alerts(tmp_path):
    df = traffic()
    day = tmp_path / "data/feedback/date=2024-01-01"
    day.mkdir(parents=True)
    preds = df.drop(columns=["label", "label_ts"])
    pq.write_table(
        pa.Table.from_pandas(preds, preserve_index=False), day / "part-predictions-1-840.parquet"
    )
    fb = df[df["label"].notna()][["request_id", "label_ts", "label"]].rename(
        columns={"label_ts": "ts"}
    )
    fb["action"], fb["source"] = "correct", "test"
    pq.write_table(
        pa.Table.from_pandas(fb, preserve_index=False), day / "part-feedback-1-500.parquet"
    )
    records = read_records(tmp_path / "data")
    assert records.counts["kept"] == len(df)
    p = params("monitor.window=week")
    out = [tmp_path / "m1.json", tmp_path / "m1.html", tmp_path / "a1.json"]
    for i in (1, 2):
        monitor(p, data_dir=tmp_path / "data", eval_dir=tmp_path / "none", metrics=tmp_path / "none.json",
                out_json=tmp_path / f"m{i}.json", out_html=tmp_path / f"m{i}.html", alerts_out=tmp_path / f"a{i}.json")  # fmt: skip
    for a, b in zip(
        out, [tmp_path / "m2.json", tmp_path / "m2.html", tmp_path / "a2.json"], strict=True
    ):
        assert a.read_bytes() == b.read_bytes(), a.name  # same data, same bytes
    data = json.loads(out[0].read_text())
    assert data["totals"]["labelled"] == int(df["label"].notna().sum())
    assert data["estimate"]["reliable"] is False  # uncalibrated without eval outputs
    assert {a["rule"] for a in json.loads(out[2].read_text())["alerts"]} == {
        r["name"] for r in p["monitor"]["rules"]
    }


def test_rollout_arms_appear_per_window():
    df = traffic()
    df["arm"] = np.where(np.arange(len(df)) % 4 == 0, "candidate", "champion")
    r = compute(df, params()["monitor"], none_calibration())
    assert r.has_rollout and sum(w.arms["candidate"] for w in r.windows) == len(df) // 4
    assert "Rollout arms" in render(r)


# ------------------------------------------------------------------ plots
def test_plots_are_deterministic_inline_svg_without_external_references():
    args = (["a", "b", "c"], {"x": [0.1, None, 0.3], "y": [0.2, 0.25, 0.5]})
    one, two = (
        plots.line_chart(*args, marked=[False, True, False]),
        plots.line_chart(*args, marked=[False, True, False]),
    )
    assert one == two and one.startswith("<svg") and one.endswith("</svg>")
    for svg in (
        one,
        plots.bar_chart(*args, stacked=True),
        plots.forest_plot(["accuracy", "macro_f1"], [0.02, -0.01], [0.0, -0.04], [0.04, 0.02]),
        plots.calibration_plot([0.2, 0.5, 0.8], [0.1, 0.5, 0.7], [5, 10, 20]),
        plots.confusion_plot([[5, 1], [2, 7]], ["a", "b"]),
    ):
        refs = re.findall(r'(?:href|src)="([^"#][^"]*)"', svg)
        assert refs == [], refs
        assert "<metadata>" not in svg and "<script" not in svg
    assert "perfect (y = x)" in plots.calibration_plot([0.5], [0.5])
    assert "too small to judge" in one


# ------------------------------------------------------------------ config
def test_rollout_and_monitor_configs_compose_and_bad_values_name_the_key():
    for option in ("off", "canary", "shadow"):
        assert compose([f"rollout={option}"], conf_dir=ROOT / "conf")["rollout"]["mode"] == option
    defaults = compose([], conf_dir=ROOT / "conf")
    assert defaults["rollout"]["mode"] == "off" and defaults["monitor"]["window"] == "week"
    cases = {
        "rollout.share=0.3": "override 'rollout.share=0.3': rollout.share: 0.3 is not a step of shares",
        "rollout.guardrails.0.margin=-1": "rollout.guardrails[0].margin: must be >= 0, got -1",
        "rollout.alpha=0.7": "override 'rollout.alpha=0.7': rollout.alpha: must be < 0.5, got 0.7",
        "rollout.shares=[0.5,0.25,1.0]": "rollout.shares: must increase strictly",
        "+rollout.sharez=1": "unknown key 'rollout.sharez' (did you mean 'share'?)",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            compose(["rollout=canary", override], conf_dir=ROOT / "conf")
    with pytest.raises(
        ConfigError, match=re.escape("override 'monitor.window=year': monitor.window")
    ):
        compose(["monitor.window=year"], conf_dir=ROOT / "conf")
    with pytest.raises(ConfigError, match="give exactly one of below or above"):
        compose(["+monitor.rules.0.above=1"], conf_dir=ROOT / "conf")


def test_a_bare_yaml_off_reads_as_off():
    from closedloop.config import validate

    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())
    bare = {**cfg, "rollout": {**cfg["rollout"], "mode": False}}  # YAML 1.1's bare `off`
    assert validate(bare)["rollout"]["mode"] == "off"


def test_from_frames_keeps_labels_of_a_joined_table():
    df = traffic()
    rec = from_frames(df)
    assert rec.frame["label"].notna().sum() == df["label"].notna().sum()
