"""Shared test data: real predictions on real, offline data, and well-formed registry entries.

Plain functions (cached where they train something), so that fixtures and tests in any
directory build on the same data; not a test module.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from closedloop.evaluation.baselines import compare_baselines, persistence_labels
from closedloop.evaluation.slices import slice_columns
from closedloop.evaluation.statistics import compare_split
from closedloop.registry.registry import empty_registry, record

ROOT = Path(__file__).resolve().parents[1]

FEATURES = ["precipitation", "temp_max", "temp_min", "wind"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
METRICS_CFG = {**PARAMS["metrics"], "n_resamples": 1000}


@functools.cache
def seattle() -> dict:
    """Real models on the real Seattle weather: a champion trained on 2012-2013, candidates
    retrained with the first half of 2014, all judged on 2014-07..2015-12 (549 days).

    Retraining logistic regression on fresher data is genuinely better (the label shift from
    rain to fog); a depth-3 tree barely changes when retrained (a point improvement only).
    """
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    old, new = df[df.date < "2014-01-01"], df[df.date < "2014-07-01"]
    prod = df[df.date >= "2014-07-01"].reset_index(drop=True)

    def fit(model, train):
        return model.fit(train[FEATURES], train.weather).predict(prod[FEATURES])

    logistic = lambda: make_pipeline(StandardScaler(), LogisticRegression())  # noqa: E731
    tree = lambda: DecisionTreeClassifier(max_depth=3, random_state=0)  # noqa: E731
    return {
        "prod": prod,
        "classes": sorted(df.weather.unique()),
        "baseline_class": new.weather.value_counts().idxmax(),
        "persistence": persistence_labels(prod, [new], "weather", "date"),
        "slices": slice_columns(prod, PARAMS["slices"], target="weather", time_column="date"),
        "champion": fit(logistic(), old),
        "candidate": fit(logistic(), new),
        "tree_champion": fit(tree(), old),
        "tree_candidate": fit(tree(), new),
    }


def eval_frame(candidate, champion=None) -> tuple[pd.DataFrame, list[str]]:
    """A frame in the reports/eval/<split>.csv format, with the real slice columns."""
    s = seattle()
    frame = pd.DataFrame({"actual": s["prod"].weather, "predicted": candidate})
    if champion is not None:
        frame["champion_predicted"] = champion
    return pd.concat([frame, s["slices"]], axis=1), list(s["slices"].columns)


def entry(i: int, version: str) -> dict:
    """A well-formed registry entry; only its version and hashes vary."""
    return {
        "version": version,
        "commit": format(i, "040x"),
        "model_hash": format(i, "064x"),
        "dvc_md5": f"{i:032x}.dir",
        "data_hash": "d" * 64,
        "metrics": {"production": {"accuracy": 0.5, "n": 100}},
        "gate": {"verdict": "pass", "split": "production"},
        "change": f"PR #{i}",
        "promoted_at": f"2026-01-0{i}T00:00:00Z",
    }


def promoted(*versions: str) -> dict:
    """A registry with these versions promoted one after another."""
    reg = empty_registry()
    for i, v in enumerate(versions, 1):
        reg["versions"].append(entry(i, v))
        record(reg, "promote", v, f"PR #{i}", f"2026-01-0{i}T00:00:00Z")
    return reg


# -------------------------------------------------- gate inputs, as evaluate and drift write them
CHAMPION = {"present": True, **entry(3, "v1.0.0"), "model_hash": "c" * 64}


def split_info(rows: int, time_min: str | None = None, time_max: str | None = None) -> dict:
    return {"rows": rows, "hash": "h" * 64, "time_min": time_min, "time_max": time_max}


SCHEMA = {
    "dataset": "seattle_weather",
    "task": "multiclass",
    "source": "seattle_weather",
    "target": "weather",
    "time_column": "date",
    "features": FEATURES,
    "feature_types": {"numeric": FEATURES, "categorical": []},
    "missing": dict.fromkeys(FEATURES, "reject"),
    "classes": ["drizzle", "fog", "rain", "snow", "sun"],
    "dataset_rows": {"rows_in": 1461, "kept": 1461, "quarantined": 0, "unused": 0, "reasons": {}},
    "splits": {
        "train": split_info(547, "2012-01-01", "2013-06-30"),
        "val": split_info(184, "2013-07-01", "2013-12-31"),
        "production": split_info(549, "2014-07-01", "2015-12-31"),
    },
    "feedback_files": [],
    "feedback_ignored_files": [],
    "feedback": {},
    "data_hash": "d" * 64,
}


def drift_column(kind: str, method: str, score: float, drifted: bool) -> dict:
    return {"kind": kind, "method": method, "score": score, "threshold": 0.05, "drifted": drifted}


DRIFT = {
    "n_columns": 4,
    "drifted_count": 1,
    "drifted_share": 0.25,
    "dataset_drift": False,
    "columns": {
        "temp_max": drift_column("feature", "K-S p_value", 0.4, False),
        "temp_min": drift_column("feature", "K-S p_value", 0.3, False),
        "wind": drift_column("feature", "K-S p_value", 0.6, False),
        "weather": drift_column("target", "chi-square p_value", 0.0, True),
    },
    "top_drifted": ["weather"],
    "reference": {"rows": 547, "sampled_rows": 547, "source": "champion", "version": "v1.0.0"},
    "current": {"rows": 549, "sampled_rows": 549},
}


def card(**changes) -> dict:
    """A model card as train writes it."""
    return {
        "model": {"name": "mlp", "arch": "mlp"},
        "trainer": {"name": "cpu"},
        "seed": 0,
        "dataset": "seattle_weather",
        "data_hash": "d" * 64,
        "train_rows": 547,
        "parameters": 4805,
        "epochs": 40,
        "steps": 720,
        "final": {"train_loss": 0.9, "val_loss": 1.1, "val_acc": 0.48},
        "device": "cpu",
        "world_size": 1,
        "versions": {"python": "3.11.7", "torch": "2.13.0", "lightning": "2.6.0"},
        "weights_sha256": "b" * 64,
        **changes,
    }


def corrupted_on_summer(n_rows: int = 30) -> np.ndarray:
    """The better candidate, made wrong on ``n_rows`` real summer days the champion got right."""
    s = seattle()
    pred = s["candidate"].copy()
    actual = s["prod"].weather.to_numpy()
    summer = (s["slices"].slice_season == "summer").to_numpy()
    rows = np.flatnonzero(summer & (s["champion"] == actual))[:n_rows]
    pred[rows] = np.where(actual[rows] == "sun", "rain", "sun")
    return pred


@functools.cache
def gate_reports(scenario: str) -> tuple[dict, dict]:
    """reports/comparison.json and reports/metrics.json as evaluate writes them."""
    s = seattle()
    cand, champ = {
        "better": (s["candidate"], s["champion"]),
        "worse": (s["champion"], s["candidate"]),
        "tree": (s["tree_candidate"], s["tree_champion"]),
        "summer": (corrupted_on_summer(), s["champion"]),
        "first": (s["candidate"], None),
    }[scenario]
    frame, cols = eval_frame(cand, champ)
    comp = compare_split(frame, s["classes"], cols, METRICS_CFG, s["baseline_class"])
    comp["baselines"] = compare_baselines(
        frame, s["classes"], s["baseline_class"], s["persistence"], METRICS_CFG
    )
    comparison = {
        "champion": None,
        "task": "multiclass",
        "baseline_class": s["baseline_class"],
        "splits": {},
    }
    comparison["splits"]["production"] = comp
    metrics = {
        "production": {
            "n": comp["n"],
            "accuracy": comp["overall"]["accuracy"]["candidate"],
            "macro_f1": comp["overall"]["macro_f1"]["candidate"],
            "ece": 0.12,
        }
    }
    return comparison, metrics


# ------------------------------------- binary and regression: real models on real offline data
@functools.cache
def task_case(dataset: str) -> dict:
    """Real scikit-learn models on a real dataset of the other tasks, judged on the same held-out
    half: ``breast_cancer`` (binary: scores P(malignant)) or ``diabetes`` (regression).

    The champion sees one feature; the candidate all of them (genuinely better); ``near`` is the
    candidate's model fitted on fewer rows (better or worse by a hair, which the data cannot
    settle). Each entry is what the eval table holds for that model.
    """
    from sklearn.linear_model import Ridge

    from closedloop.config import compose
    from closedloop.data import sources

    params = compose([f"dataset={dataset}"], conf_dir=ROOT / "conf")
    ds = params["dataset"]
    df = getattr(sources, dataset)()
    target = ds["target"]
    features = [c for c in df.columns if c != target]
    order = np.random.default_rng(0).permutation(len(df))
    train, test = df.iloc[order[: len(df) // 2]], df.iloc[order[len(df) // 2 :]]
    test = test.reset_index(drop=True)
    if ds["task"] == "regression":
        one = ["bmi"]
        model = lambda: Ridge(1.0)  # noqa: E731

        def fit(m, rows, cols):
            return m.fit(rows[cols], rows[target]).predict(test[cols])
    else:
        one = ["mean_texture"]
        model = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))  # noqa: E731

        def fit(m, rows, cols):
            return m.fit(rows[cols], rows[target]).predict_proba(test[cols])[:, 1]

    return {
        "params": params,
        "test": test,
        "train": train,
        "slices": slice_columns(test, params["slices"], target=target, time_column=None),
        "champion": fit(model(), train, one),
        "candidate": fit(model(), train, features),
        "near": fit(model(), train.iloc[: len(train) * 2 // 3], features),
    }


def task_frame(dataset: str, candidate, champion=None) -> tuple[pd.DataFrame, list[str]]:
    """An eval table in the reports/eval/<split>.csv format for a binary or regression case."""
    case = task_case(dataset)
    ds, test = case["params"]["dataset"], case["test"]
    threshold = case["params"]["metrics"]["threshold"]
    if ds["task"] == "regression":
        frame = pd.DataFrame({"actual": test[ds["target"]], "predicted": candidate})
        frame["residual"] = frame["predicted"] - frame["actual"]
        if champion is not None:
            frame["champion_predicted"] = champion
    else:
        negative, positive = ds["classes"]
        label = lambda p: np.where(np.asarray(p) >= threshold, positive, negative)  # noqa: E731
        frame = pd.DataFrame({"actual": test[ds["target"]], "predicted": label(candidate)})
        frame[f"p_{negative}"], frame[f"p_{positive}"] = 1 - candidate, candidate
        if champion is not None:
            frame["champion_predicted"] = label(champion)
            frame["champion_score"] = champion
    return pd.concat([frame, case["slices"]], axis=1), list(case["slices"].columns)


# ------------------------------------------------------------ a user's own table (README)
def cars_table(missing_labels: tuple[int, ...] = (10, 50, 200, 300, 390)) -> pd.DataFrame:
    """vega_datasets' 406 cars (real, offline) as a user's table: numbers with real missing
    values (Miles_per_Gallon 8, Horsepower 6), an integer-coded category (Cylinders), a text
    one (make, the first word of the name: later years bring makes 1970-75 never had), the
    model year, and ``missing_labels`` rows whose label (Origin) is blanked."""
    from vega_datasets import local_data

    df = local_data.cars()
    df["make"] = df["Name"].str.split().str[0]
    df = df.drop(columns="Name")
    df.loc[list(missing_labels), "Origin"] = None
    df["Year"] = df["Year"].dt.strftime("%Y-%m-%d")
    return df


def readme_block(first_line: str) -> str:
    """The fenced code block of README.md that opens with ``first_line``: what the README
    tells a user to write, taken literally."""
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in text.split("```")[1::2]:
        body = block.split("\n", 1)[1] if "\n" in block else ""
        if body.startswith(first_line):
            return body
    raise AssertionError(f"README.md has no code block opening with {first_line!r}")


# ------------------------------------------------------------ rollout traffic
def rollout_traffic(
    seed: int,
    n: int = 40_000,
    hours: float = 48.0,
    share: float = 0.25,
    mode: str = "canary",
    error: tuple[float, float] = (0.01, 0.01),
    accuracy: tuple[float, float] = (0.80, 0.80),
    latency_ms: tuple[float, float] = (40.0, 40.0),
    coupling: float = 0.9,
    feedback_rate: float = 0.5,
    assigned_share: float | None = None,
) -> pd.DataFrame:
    """Seeded per-request records as the server logs them (closedloop.rollout.records).

    Pairs are (champion, candidate). In a canary each request goes to the candidate with
    probability ``assigned_share`` (default: ``share``, the declared one; another value makes
    a sample ratio mismatch) and the champion also runs in shadow, so disagreement is known;
    in shadow mode the champion answers and the candidate runs on every request. Latency is
    lognormal around the given medians; labels arrive for ``feedback_rate`` of requests a
    few hours later.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-03-01", tz="UTC")
    ts = start + pd.to_timedelta(np.sort(rng.uniform(0, hours, n)), unit="h")
    classes = np.array(["a", "b", "c"])
    label = rng.choice(classes, n)

    # the two models' answers are coupled: with probability `coupling` they share the same
    # uniform draw (and the same wrong class), so they disagree mostly where accuracy differs
    u = rng.random(n)
    coupled = rng.random(n) < coupling
    u2 = np.where(coupled, u, rng.random(n))
    idx = np.searchsorted(classes, label)
    wrong_h = classes[(idx + rng.integers(1, 3, n)) % 3]
    wrong_c = np.where(coupled, wrong_h, classes[(idx + rng.integers(1, 3, n)) % 3])
    champ = np.where(u < accuracy[0], label, wrong_h)
    cand = np.where(u2 < accuracy[1], label, wrong_c)
    champ_err, cand_err = rng.random(n) < error[0], rng.random(n) < error[1]
    champ_lat = rng.lognormal(np.log(latency_ms[0]), 0.5, n)
    cand_lat = rng.lognormal(np.log(latency_ms[1]), 0.5, n)
    if mode == "canary":
        p = share if assigned_share is None else assigned_share
        is_cand = rng.random(n) < p
        arm = np.where(is_cand, "candidate", "champion")
        pred, other = np.where(is_cand, cand, champ), np.where(is_cand, champ, cand)
        err, lat = np.where(is_cand, cand_err, champ_err), np.where(is_cand, cand_lat, champ_lat)
        other_err, other_lat = (
            np.where(is_cand, champ_err, cand_err),
            np.where(is_cand, champ_lat, cand_lat),
        )
        shares = np.full(n, share)
    else:
        arm = np.full(n, "champion")
        pred, other, err, lat = champ, cand, champ_err, champ_lat
        other_err, other_lat = cand_err, cand_lat
        shares = np.zeros(n)
    labelled = rng.random(n) < feedback_rate
    delay = pd.to_timedelta(rng.exponential(3.0, n), unit="h")
    return pd.DataFrame(
        {
            "request_id": [f"r{seed}-{i}" for i in range(n)],
            "ts": ts,
            "model_version": np.where(arm == "candidate", "v1.1.0", "v1.0.0"),
            "arm": arm,
            "share": shares,
            "prediction": np.where(err, None, pred),
            "error": np.where(err, "model failed", None),
            "latency_ms": lat,
            "shadow_prediction": np.where(other_err, None, other),
            "shadow_error": np.where(other_err, "model failed", None),
            "shadow_latency_ms": other_lat,
            "label": np.where(labelled, label, None),
            "label_ts": pd.Series(ts + delay).where(labelled),
        }
    )


# ------------------------------------------------------------ monitoring
def seattle_records(root: Path = ROOT) -> pd.DataFrame:
    """The real production window (2014-2015) as served traffic, from the loop's own outputs.

    Each day of reports/eval/production.csv (the candidate's per-example probabilities, from
    `dvc repro`) becomes one request answered at noon UTC that day, with its features from the
    snapshot (artifacts/snapshot/production.parquet, same row order) and the real label as
    feedback the next day. No latency or error is known for this replay, so neither is set.
    """
    import json

    ev = pd.read_csv(root / "reports/eval/production.csv")
    snap = pd.read_parquet(root / "artifacts/snapshot/production.parquet")
    if len(ev) != len(snap):
        raise AssertionError("reports/eval and the snapshot disagree: run `dvc repro`")
    classes = [c.removeprefix("p_") for c in ev.columns if c.startswith("p_")]
    ts = pd.to_datetime(ev["date"]).dt.tz_localize("UTC") + pd.Timedelta(hours=12)
    frame = pd.DataFrame(
        {
            "request_id": [f"seattle-{d}" for d in ev["date"]],
            "ts": ts,
            "model_version": "candidate",
            "prediction": ev["predicted"],
            "probabilities": [
                json.dumps({c: float(row[f"p_{c}"]) for c in classes}) for _, row in ev.iterrows()
            ],
        }
    )
    for f in FEATURES:
        frame[f"x_{f}"] = snap[f].to_numpy(dtype=float)
    frame["label"] = ev["actual"]
    frame["label_ts"] = ts + pd.Timedelta(days=1)
    return frame


# ---------------------------------------------- a real browser (self-contained pages)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    dom: str  # the DOM as the browser built it
    requests: list[str]  # every URL the page asked for beyond its own file, none let out


def render(page: Path, screenshot: Path | None = None, size=(1200, 2000)) -> Rendered:
    """The system's headless Chromium, driven by Playwright, renders ``page``: the DOM after
    load, an optional full-page PNG and the requests the page made. Playwright reports the
    page's own requests only, so Chromium's background calls (which change with its version:
    150 calls www.google.com at start) are not mistaken for the page's; each request is
    recorded and aborted, so nothing leaves this machine."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    own = page.resolve().as_uri()

    def intercept(route) -> None:
        url = route.request.url
        if url == own:
            route.continue_()
        else:
            requests.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": size[0], "height": size[1]})
            tab.route("**/*", intercept)
            tab.goto(own, wait_until="load")
            tab.wait_for_load_state("networkidle")
            if screenshot is not None:
                tab.screenshot(path=screenshot, full_page=True)
            return Rendered(tab.content(), requests)
        finally:
            browser.close()


def trained_model(tmp: Path) -> Path:
    """A two-epoch model of the default config, trained in ``tmp`` (snapshot, model and the
    params.yaml it was trained with), for tests that serve or load a real model."""
    import os

    from closedloop.config import compose, dump
    from closedloop.data.collect import collect
    from closedloop.training.train import train
    from tests.conftest import ROOT

    params = compose(["trainer=cpu", "trainer.max_epochs=2"], conf_dir=ROOT / "conf")
    cwd = os.getcwd()
    os.chdir(tmp)  # collect and train write reports/ under the working directory
    try:
        collect(params, out_dir=tmp / "snap", data_dir=tmp)
        train(params, snapshot=tmp / "snap", out_dir=tmp / "model")
    finally:
        os.chdir(cwd)
    (tmp / "params.yaml").write_text(dump(params))
    return tmp / "model"
