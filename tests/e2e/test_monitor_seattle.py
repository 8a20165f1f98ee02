"""The monitor on the real Seattle production period, and its page in a real browser.

The loop runs as `dvc repro` would with the default config (collect, train, evaluate on the
CPU) in a scratch directory; its per-example probabilities for 2014-2015 become the served
traffic (tests/fixtures.py: seattle_records). The label-free estimate is shown beside the
realised accuracy per month with their gap. On this data the assumption behind the estimate
fails: the labels themselves shift (fog replaces rain), so P(label | features) changes, the
gap is large, and the page flags the estimate as unreliable (the eval set's ECE is above the
limit). With labels drawn from the model's own calibrated probabilities instead (no concept
drift by construction), the same estimate lands inside the realised Wilson interval.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from closedloop.artefacts.champion import write_no_champion
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.evaluation.evaluate import evaluate
from closedloop.monitoring.estimate import fit
from closedloop.monitoring.monitor import monitor
from closedloop.paths import CANDIDATE_DIR, SNAPSHOT_DIR
from closedloop.reporting import plots
from closedloop.rollout.records import from_frames, probabilities
from closedloop.training.train import train
from tests.conftest import ROOT
from tests.fixtures import CHROMIUM, render, seattle_records


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The default loop's outputs (what `dvc repro` leaves) in a scratch directory."""
    root = tmp_path_factory.mktemp("seattle-loop")
    params = compose([], conf_dir=ROOT / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        collect(params, SNAPSHOT_DIR, root / "data")
        train(params, SNAPSHOT_DIR, CANDIDATE_DIR)
        write_no_champion(root / "models/champion/entry.json")  # as committed: none yet
        evaluate(params, SNAPSHOT_DIR, CANDIDATE_DIR, root / "models/champion/entry.json")
    return root, params


@pytest.fixture(scope="module")
def seattle_monitor(loop, tmp_path_factory):
    root, params = loop
    out = tmp_path_factory.mktemp("seattle-monitor")
    p = {**params, "monitor": {**params["monitor"], "window": "month"}}
    report = monitor(
        p,
        records=from_frames(seattle_records(root)),
        eval_dir=root / "reports/eval",
        metrics=root / "reports/metrics.json",
        snapshot=root / SNAPSHOT_DIR,
        champion_entry=root / "models/champion/entry.json",
        out_json=out / "monitor.json",
        out_html=out / "monitor.html",
        alerts_out=out / "alerts.json",
        workspace=out / "workspace",
    )
    return report, out, root


def test_estimate_beside_realised_accuracy_per_month_with_the_gap(seattle_monitor):
    _, out, _ = seattle_monitor
    data = json.loads((out / "monitor.json").read_text())
    windows = data["windows"]
    assert [w["label"] for w in windows][:2] == ["2014-01", "2014-02"] and len(windows) == 24
    assert sum(w["requests"] for w in windows) == 730
    for w in windows:
        assert w["gap"] == pytest.approx(w["estimated_accuracy"] - w["realised_accuracy"], abs=2e-6)
    gaps = np.array([w["gap"] for w in windows])
    print("\nmonth    estimated realised gap")
    for w in windows:
        print(
            f"{w['label']}  {w['estimated_accuracy']:.3f}     {w['realised_accuracy']:.3f}    {w['gap']:+.3f}"
        )
    print(
        f"mean |gap| {np.abs(gaps).mean():.3f}; overall estimated {data['totals']['estimated_accuracy']:.3f}, realised {data['totals']['realised_accuracy']:.3f}"
    )
    # the concept drift of this period: realised accuracy swings with the season, the
    # estimate from the probabilities cannot, and the page says not to trust it
    realised = np.array([w["realised_accuracy"] for w in windows])
    assert realised.max() - realised.min() > 0.5
    assert np.abs(gaps).mean() > 0.1
    assert data["estimate"]["reliable"] is False
    assert data["estimate"]["ece"] > data["estimate"]["max_ece"]
    html = (out / "monitor.html").read_text()
    assert "The estimate is unreliable" in html and "assumes no concept drift" in html
    # realised accuracy over the whole period is what evaluate measured on the same rows
    metrics = json.loads((seattle_monitor[2] / "reports/metrics.json").read_text())
    assert data["totals"]["realised_accuracy"] == pytest.approx(
        metrics["production"]["accuracy"], abs=1e-6
    )


def test_estimate_tracks_labels_drawn_from_the_models_calibrated_probabilities(loop):
    """No concept drift by construction: labels drawn from the calibrated top probability."""
    root, params = loop
    records = seattle_records(root)
    cal = fit(
        params["monitor"]["estimate"], root / "reports/eval/val.csv", root / "reports/metrics.json"
    )
    probs, _ = probabilities(records)
    chance = cal(probs.max(axis=1))
    hits = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        right = rng.random(len(records)) < chance
        relabelled = records.assign(label=np.where(right, records["prediction"], "_other_"))
        p = {
            **params,
            "monitor": {
                **params["monitor"],
                "window": "month",
                "drift": {"enabled": False, "min_rows": 30},
            },
        }
        from closedloop.monitoring.windows import compute

        r = compute(from_frames(relabelled).frame, p["monitor"], cal)
        hits += [w.realised_low <= w.estimated_accuracy <= w.realised_high for w in r.windows]
    assert np.mean(hits) >= 0.85, np.mean(hits)  # 95% intervals: about 95% expected


def test_drift_per_window_alerts_and_the_evidently_workspace(seattle_monitor):
    from evidently.ui.workspace import Workspace

    report, out, _ = seattle_monitor
    judged = [w for w in report.windows if w.drift_share is not None]
    ws = Workspace(str(out / "workspace"))
    (project,) = ws.search_project("closedloop monitor")
    assert len(ws.list_runs(project.id)) == len(judged)  # `evidently ui` sees every window
    assert len(judged) >= 20  # February (28 days) is below min_requests: marked, no verdict
    assert all(w.drift_share is None for w in report.windows if w.too_small)
    alerts = json.loads((out / "alerts.json").read_text())["alerts"]
    assert [a["rule"] for a in alerts] == [a["rule"] for a in report.alerts]
    assert {a["rule"] for a in alerts} == {
        r["name"] for r in compose([], conf_dir=ROOT / "conf")["monitor"]["rules"]
    }


# ------------------------------------------------------------------ the browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (apt-get install -y chromium; .ci/run does)"
)
def test_the_page_in_headlesschromium(seattle_monitor, tmp_path):
    _, out, _ = seattle_monitor
    page = out / "monitor.html"
    html = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?!#)[a-z]+:""", html, re.I)  # no URL
    assert not re.search(r"url\((?!#)", html) and "@import" not in html and "<script" not in html

    control = tmp_path / "control.html"  # a page that does fetch: the check must see it
    control.write_text('<html><body><img src="http://cdn.example.invalid/x.png"></body></html>')
    assert render(control).requests == ["http://cdn.example.invalid/x.png"]

    shot_path = tmp_path / "monitor.png"
    shown = render(page, shot_path, size=(1200, 2000))
    assert shown.requests == [], f"the page made network requests: {shown.requests}"
    dom = shown.dom
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "Monitoring" in text and len(text.split()) > 500  # not blank
    assert plots.count_svgs(dom) >= 8  # its plots, in the rendered DOM
    assert dom.count("<path") > 100
    data = json.loads((out / "monitor.json").read_text())

    def key(name: str) -> str:
        return re.search(rf'data-key="{name}"[^>]*>([^<]+)<', dom).group(1).strip()

    assert key("requests") == str(data["totals"]["requests"]) == "730"
    assert key("labelled") == str(data["totals"]["labelled"])
    assert key("estimated_accuracy") == f"{data['totals']['estimated_accuracy']:.3f}"
    assert key("realised_accuracy") == f"{data['totals']['realised_accuracy']:.3f}"
    for w in (data["windows"][0], data["windows"][-1]):
        row = re.search(rf'<tr[^>]*data-window="{w["label"]}"[^>]*>(.*?)</tr>', dom, re.S)
        cells = row.group(1)
        assert (
            f">{w['estimated_accuracy']:.3f}<" in cells
            and f">{w['realised_accuracy']:.3f}<" in cells
        )
        assert f">{w['gap']:+.3f}<" in cells
    png = shot_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    keep = ROOT / ".pytest-artifacts"  # for a person to look at; ignored by git
    keep.mkdir(exist_ok=True)
    shutil.copy(shot_path, keep / "monitor.png")
