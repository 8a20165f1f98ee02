"""reports/benchmark.html in a real browser: the plots are there, and the page fetches nothing.

The loop runs as `dvc repro` would in a scratch directory, with a champion (the default
model trained for two epochs) so that every figure has both sides: collect, train the
champion and the candidate, evaluate, drift, gate, report. Headless Chromium then renders
the page, and any request it makes is recorded and refused (tests/fixtures.py: render).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from closedloop.artefacts.champion import write_no_champion
from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.data.snapshot import read_schema, read_split, tensors
from closedloop.evaluation.drift import drift
from closedloop.evaluation.evaluate import evaluate
from closedloop.gating.gate import gate_reports
from closedloop.io import write_json
from closedloop.models.encoding import Encoding
from closedloop.models.persist import load_model, predict_proba
from closedloop.paths import (
    BENCHMARK_HTML,
    CANDIDATE_DIR,
    CHAMPION_DIR,
    CHAMPION_ENTRY,
    SNAPSHOT_DIR,
)
from closedloop.reporting import plots
from closedloop.reporting.report import write_report
from closedloop.training.train import train
from tests.conftest import ROOT
from tests.fixtures import CHROMIUM, entry, render

KINDS = ("forest", "calibration", "confusion", "drift")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("benchmark")
    params = compose([], conf_dir=ROOT / "conf")
    short = compose(["trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        collect(params, SNAPSHOT_DIR, root / "data")
        old = train(short, SNAPSHOT_DIR, CHAMPION_DIR)
        write_json(
            CHAMPION_ENTRY,
            {"present": True, **entry(1, "v1.0.0"), "model_hash": old.weights_sha256},
        )
        train(params, SNAPSHOT_DIR, CANDIDATE_DIR)
        evaluate(params)
        write_no_champion(root / "none/entry.json")  # drift against the candidate's data
        drift(params, champion_entry=root / "none/entry.json")
        gate_reports(params)
        write_report()
    return root / BENCHMARK_HTML


def figure(html: str, kind: str) -> str:
    found = re.search(rf'<figure class="{kind}">(.*?)</figure>', html, re.S)
    assert found, f"no {kind} figure"
    return found.group(1)


def test_every_plot_is_inline_svg(page):
    html = page.read_text()
    for kind in KINDS:
        assert plots.count_svgs(figure(html, kind)) >= 1, kind
    assert plots.count_svgs(figure(html, "confusion")) == 2  # candidate and champion
    assert plots.count_svgs(figure(html, "calibration")) == 2  # val and production
    assert "perfect (y = x)" in figure(html, "calibration")
    forest = figure(html, "forest")
    assert "accuracy vs champion" in forest and "vs best constant" in forest
    assert "season=winter" in forest  # slices, with a champion
    drifted = figure(html, "drift")
    assert "temp_max" in drifted and "threshold" in drifted


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (apt-get install -y chromium; .ci/run does)"
)
def test_the_report_in_headless_chromium(page, tmp_path):
    html = page.read_text()
    assert "<script" not in html and not re.search(
        r"""(?:src|href)\s*=\s*["']?(?!#)[a-z]+:""", html
    )

    control = tmp_path / "control.html"  # a page that does fetch: the check must see it
    control.write_text('<html><body><img src="http://cdn.example.invalid/x.png"></body></html>')
    assert render(control).requests == ["http://cdn.example.invalid/x.png"]

    shot = tmp_path / "benchmark.png"
    shown = render(page, shot, size=(1200, 4000))
    assert shown.requests == [], f"the page made network requests: {shown.requests}"
    rendered = shown.dom
    for kind in KINDS:  # each kind of plot, as the browser built the DOM
        assert plots.count_svgs(figure(rendered, kind)) >= 1, kind
    assert plots.count_svgs(rendered) >= 6
    assert rendered.count("<path") > 50
    text = re.sub(r"<[^>]+>", " ", rendered)
    assert "closedloop benchmark" in text and "Baselines" in text and "Shipped weights" in text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    keep = ROOT / ".pytest-artifacts"
    keep.mkdir(exist_ok=True)
    shutil.copy(shot, keep / "benchmark.png")
    shutil.copy(page, keep / "benchmark.html")


def test_the_champions_ece_is_measured_on_the_same_rows(page):
    """It used to be n/a: evaluate now scores the champion's probabilities as well."""
    from torchmetrics.classification import MulticlassCalibrationError

    root = page.parents[1]
    params = compose([], conf_dir=ROOT / "conf")
    ece = json.loads((root / "reports/comparison.json").read_text())["splits"]["production"][
        "overall"
    ]["ece"]
    model, config = load_model(root / CHAMPION_DIR, params["allowed_targets"])
    schema = read_schema(root / SNAPSHOT_DIR)
    x, y = tensors(
        read_split("production", root / SNAPSHOT_DIR), schema, Encoding.from_config(config)
    )
    probs = predict_proba(model, x)
    expected = MulticlassCalibrationError(
        len(config["classes"]), n_bins=params["metrics"]["ece_bins"], norm="l1"
    )(probs, torch.from_numpy(y))
    assert ece["champion"] == pytest.approx(float(expected), abs=1e-6)
    assert ece["delta"] == pytest.approx(ece["candidate"] - ece["champion"], abs=2e-6)
    md = (root / "reports/benchmark.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| production | ece"))
    assert f"| {ece['champion']:.3f} |" in row and "n/a | n/a" not in row
