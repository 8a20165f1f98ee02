"""README "Your own table in five minutes", followed literally in a copy of the repository:
a CSV under data/raw/, one dataset YAML, one line of conf/config.yaml, `dvc repro`.

The table is vega_datasets' cars (real, offline): numbers with real holes, an integer-coded
and a text category, five labels blanked. The same holds for a folder of Parquet files with a
random split and no time column.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from tests.conftest import make_project, run
from tests.fixtures import cars_table, readme_block

ALL = {"compose", "collect", "champion", "train", "evaluate", "errors", "drift", "gate", "report"}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("own_table"))
    (root / "data/raw").mkdir(parents=True)
    cars_table().to_csv(root / "data/raw/cars.csv", index=False)  # step 1
    (root / "conf/dataset/cars.yaml").write_text(readme_block("# conf/dataset/cars.yaml"))  # 2
    step3 = readme_block("sed -i ")  # step 3, as the README writes it
    run(["bash", "-c", step3.splitlines()[0].split("#")[0]], root)
    out = run(["dvc", "repro"], root).stdout
    return root, out


def test_one_yaml_file_trains_evaluates_gates_and_reports(project):
    root, out = project
    assert ran(out) == ALL, out
    params = (root / "params.yaml").read_text()
    assert "name: cars" in params and "by: categorical" in params  # default slices
    gate = json.loads((root / "reports/gate.json").read_text())
    assert gate["verdict"] in ("pass", "fail", "inconclusive") and gate["checks"]
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["production"]["n"] == 153 and metrics["production"]["accuracy"] > 0.6
    assert "| Origin | target |" in (root / "reports/benchmark.md").read_text()  # drift


def test_rows_without_a_label_are_in_the_quarantine_with_a_reason(project):
    root, _ = project
    q = pd.read_parquet(root / "reports/quarantine.parquet")
    assert q["kind"].tolist() == ["dataset"] * 5
    assert set(q["reason"]) == {"target 'Origin': missing"}
    schema = json.loads((root / "artifacts/snapshot/schema.json").read_text())
    assert schema["dataset_rows"] == {
        "rows_in": 406,
        "kept": 401,
        "quarantined": 5,
        "unused": 0,
        "reasons": {"target 'Origin': missing": 5},
    }


def test_unseen_categories_are_in_drift_errors_and_the_comment(project):
    root, _ = project
    drift = json.loads((root / "reports/drift.json").read_text())
    assert drift["oov"]["make"]["count"] > 0 and drift["oov"]["Cylinders"]["count"] == 3
    assert drift["columns"]["make"]["method"].startswith("chi-square")  # as categorical
    errors = (root / "reports/errors.md").read_text()
    assert "## Errors by slice: make" in errors and "`<oov>` bucket" in errors
    comment = (root / "reports/benchmark.md").read_text()
    assert "out-of-vocabulary bucket" in comment and "`make`" in comment
    comparison = json.loads((root / "reports/comparison.json").read_text())
    assert "<oov>" in comparison["splits"]["production"]["slices"]["make"]


def _variant(name: str, path: str, task: str, target: str, numeric: str, categorical: str) -> str:
    """The README's cars YAML with another name, file, task, target and feature lists."""
    text = readme_block("# conf/dataset/cars.yaml")
    text = text.replace("name: cars #", f"name: {name} #").replace("data/raw/cars.csv", path)
    text = re.sub(r"^task: \w+", f"task: {task}", text, flags=re.M)
    text = re.sub(r"^target: \w+", f"target: {target}", text, flags=re.M)
    text = re.sub(r"^  numeric: \[.*\]", f"  numeric: [{numeric}]", text, flags=re.M)
    return re.sub(r"^  categorical: \[.*\]", f"  categorical: [{categorical}]", text, flags=re.M)


def _switch(root, name: str) -> str:
    config = root / "conf/config.yaml"
    text = re.sub(r"- dataset: \w+", f"- dataset: {name}", config.read_text(), count=1)
    config.write_text(text)
    return run(["dvc", "repro"], root).stdout


def test_a_csv_with_a_numeric_target_is_a_regression_from_one_yaml(project):
    """The contract's case: categorical features, missing feature values and rows whose
    (numeric) target is missing; one YAML file, nothing else."""
    root, _ = project
    (root / "conf/dataset/cars_mpg.yaml").write_text(
        _variant(
            "cars_mpg",
            "data/raw/cars.csv",
            "regression",
            "Miles_per_Gallon",
            "Horsepower, Displacement, Weight_in_lbs, Acceleration",
            "Cylinders, make, Origin",
        )
    )
    out = _switch(root, "cars_mpg")
    assert {"collect", "train", "evaluate", "gate", "report"} <= ran(out), out
    metrics = json.loads((root / "reports/metrics.json").read_text())["production"]
    assert {"mae", "rmse", "r2"} <= set(metrics) and metrics["mae"] < 10  # MPG: 9-47; 3 epochs
    q = pd.read_parquet(root / "reports/quarantine.parquet")
    assert set(q["reason"]) == {"target 'Miles_per_Gallon': missing"} and len(q) == 8
    gate = json.loads((root / "reports/gate.json").read_text())
    assert gate["verdict"] in ("pass", "fail", "inconclusive") and gate["checks"]
    assert "rmse" in (root / "reports/benchmark.md").read_text().lower()


def test_a_folder_of_parquet_files_with_a_binary_target_and_a_random_split(project):
    """A glob over Parquet files (one per decade), no time column (a random split), and a
    yes/no target: a binary task, from one YAML file."""
    root, _ = project
    table = cars_table()
    table["american"] = table["Origin"].map({"USA": "yes", "Europe": "no", "Japan": "no"})
    table = table.drop(columns="Origin")
    for decade, part in table.groupby(table["Year"].str[:3]):
        part.drop(columns="Year").to_parquet(root / f"data/raw/cars_us-{decade}0s.parquet")
    text = _variant(
        "cars_us",
        "data/raw/cars_us-*.parquet",
        "binary",
        "american",
        "Miles_per_Gallon, Horsepower, Displacement, Weight_in_lbs, Acceleration",
        "Cylinders, make",
    )
    text = text.split("time_column:")[0] + "features:" + text.split("features:")[1]
    text = text.split("split:")[0] + (
        "split: { strategy: random, fractions: { train: 0.6, val: 0.2, production: 0.2 } }\n"
    )
    (root / "conf/dataset/cars_us.yaml").write_text(text)
    out = _switch(root, "cars_us")
    assert {"collect", "train", "evaluate", "gate", "report"} <= ran(out), out
    schema = json.loads((root / "artifacts/snapshot/schema.json").read_text())
    assert schema["time_column"] is None and schema["task"] == "binary"
    assert schema["dataset_rows"]["kept"] == 401 and schema["dataset_rows"]["quarantined"] == 5
    metrics = json.loads((root / "reports/metrics.json").read_text())["production"]
    assert metrics["roc_auc"] > 0.8
    q = pd.read_parquet(root / "reports/quarantine.parquet")
    assert set(q["reason"]) == {"target 'american': missing"} and len(q) == 5
    assert json.loads((root / "reports/gate.json").read_text())["verdict"]
