"""collect: real offline data, declared splits, schema errors that name the column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.data.snapshot import read_schema, read_split
from closedloop.errors import DataError
from tests.conftest import ROOT


def test_seattle_snapshot_respects_declared_time_splits(tmp_path, tiny_params):
    record = collect(tiny_params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")
    split_cfg = tiny_params["dataset"]["split"]
    total = 0
    for name in ("train", "val", "production"):
        part = read_split(name, tmp_path / "snap")
        assert len(part) == record.splits[name].rows > 0
        assert part["date"].min() >= pd.Timestamp(split_cfg[name]["start"])
        assert part["date"].max() <= pd.Timestamp(split_cfg[name]["end"])
        assert part["date"].is_monotonic_increasing
        total += len(part)
    assert total == 1461  # every day of 2012-2015 lands in exactly one split
    assert read_schema(tmp_path / "snap").features == [
        "precipitation",
        "temp_max",
        "temp_min",
        "wind",
    ]
    # The real label shift the later stages must detect: "rain" almost vanishes in production.
    train, prod = (
        read_split("train", tmp_path / "snap"),
        read_split("production", tmp_path / "snap"),
    )
    assert (train.weather == "rain").mean() > 0.2 > 0.02 > (prod.weather == "rain").mean()


def test_collect_is_deterministic(tmp_path, tiny_params):
    a = collect(tiny_params, out_dir=tmp_path / "a", data_dir=tmp_path)
    b = collect(tiny_params, out_dir=tmp_path / "b", data_dir=tmp_path)
    assert a.data_hash == b.data_hash


def test_random_split_is_stratified_and_seeded(tmp_path):
    params = compose(["dataset=digits"], conf_dir=ROOT / "conf")
    record = collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    assert sum(s.rows for s in record.splits.values()) == 1797
    val = read_split("val", tmp_path / "snap")
    shares = val["digit"].value_counts(normalize=True)
    assert shares.max() - shares.min() < 0.02  # stratified: every digit about 10%
    other = collect({**params, "seed": 7}, out_dir=tmp_path / "other", data_dir=tmp_path)
    assert other.data_hash != record.data_hash


def test_synthetic_is_sized_in_yaml(tmp_path):
    params = compose(
        [
            "dataset=synthetic",
            "dataset.source.n_samples=1000",
            "dataset.source.n_features=7",
            "dataset.source.n_informative=5",
        ],
        conf_dir=ROOT / "conf",
    )
    record = collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    assert sum(s.rows for s in record.splits.values()) == 1000
    assert len(record.features) == 7


def _collect_table(tmp_path, monkeypatch, df: pd.DataFrame, *overrides: str):
    """collect over ``df`` written to data/raw/t.csv, in a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True, exist_ok=True)
    df.to_csv(tmp_path / "data/raw/t.csv", index=False)
    params = _read_table_params("data/raw/t.csv", *overrides)
    return collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")


def test_bad_rows_are_quarantined_with_their_reason(tmp_path, monkeypatch):
    """A non-finite feature, a label that is not a class, a missing label, a missing value
    under the reject policy: each row goes to reports/quarantine.parquet with its reason,
    and rows in = kept + quarantined."""
    df = _seattle_table()
    df.loc[5, "wind"] = np.inf
    df.loc[3, "weather"] = "hail"
    df.loc[7, "weather"] = None
    df.loc[9, "temp_max"] = None
    record = _collect_table(tmp_path, monkeypatch, df)
    rows = record.dataset_rows
    assert (rows.rows_in, rows.kept, rows.quarantined, rows.unused) == (1461, 1457, 4, 0)
    q = pd.read_parquet(tmp_path / "reports/quarantine.parquet").set_index("request_id")
    assert set(q["kind"]) == {"dataset"} and set(q["file"]) == {"data/raw/t.csv"}
    assert q.loc["row 5", "reason"] == "feature 'wind': not finite"
    assert q.loc["row 3", "reason"] == "target 'weather': 'hail' is not a declared class"
    assert q.loc["row 7", "reason"] == "target 'weather': missing"
    assert q.loc["row 9", "reason"] == "feature 'temp_max': missing (policy reject)"
    assert '"weather": "hail"' in q.loc["row 3", "record"]


def test_missing_values_are_imputed_by_policy(tmp_path, monkeypatch):
    df = _seattle_table()
    df.loc[[2, 4], "temp_max"] = None
    record = _collect_table(tmp_path, monkeypatch, df, "+dataset.missing.temp_max=impute")
    assert record.dataset_rows.quarantined == 0
    assert record.missing["temp_max"] == "impute" and record.missing["wind"] == "reject"
    assert read_split("train", tmp_path / "snap")["temp_max"].isna().sum() == 2


def test_text_in_a_numeric_feature_is_one_line_naming_file_and_key(tmp_path, monkeypatch):
    df = _seattle_table().astype({"wind": object})
    df.loc[[1, 2], "wind"] = "calm"
    with pytest.raises(DataError) as info:
        _collect_table(tmp_path, monkeypatch, df)
    assert str(info.value) == (
        "conf/dataset/seattle_weather.yaml: dataset.features.numeric: column 'wind' holds "
        "text, not numbers (e.g. 'calm'; 2 value(s)); list it under features.categorical, or "
        "fix the data"
    )


def test_declared_column_missing_from_source(tmp_path):
    params = compose(["dataset.features.numeric=[precipitation,humidity]"], conf_dir=ROOT / "conf")
    with pytest.raises(DataError) as info:
        collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    assert str(info.value).startswith(
        "conf/dataset/seattle_weather.yaml: dataset.features.numeric: column 'humidity' is "
        "not in what dataset.source (closedloop.data.sources.seattle_weather) returned"
    )
    assert not (tmp_path / "snap").exists(), "a failed collect must not leave a partial snapshot"


# ------------------------------------------------------------------- read_table
def _seattle_table() -> pd.DataFrame:
    from vega_datasets import local_data

    return local_data.seattle_weather()


def _read_table_params(path: str, *extra: str, **options) -> dict:
    overrides = [
        "dataset.source._target_=closedloop.data.sources.read_table",
        f"+dataset.source.path={path}",
        *(f"+dataset.source.{k}={v}" for k, v in options.items()),
        *extra,
    ]
    return compose(overrides, conf_dir=ROOT / "conf")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".jsonl"])
def test_read_table_gives_the_same_snapshot_from_any_format(tmp_path, monkeypatch, suffix):
    """The user's own file under data/raw/, path relative to the repository root: the same
    rows as the built-in source give the same snapshot, whatever the format."""
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    df = _seattle_table().assign(date=lambda d: d.date.dt.strftime("%Y-%m-%d"))
    path = raw / f"weather{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, index=False)
    params = _read_table_params(f"data/raw/weather{suffix}")
    mine = collect(params, out_dir=tmp_path / "mine", data_dir=tmp_path / "data")
    builtin = collect(
        compose([], conf_dir=ROOT / "conf"), out_dir=tmp_path / "builtin", data_dir=tmp_path
    )
    assert mine.data_hash == builtin.data_hash
    assert mine.feedback_files == [], "a user's table in data/raw/ is not feedback"


def test_read_table_glob_reads_every_matching_file_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True)
    df = _seattle_table()
    for year, part in df.groupby(df.date.dt.year):
        part.to_csv(tmp_path / f"data/raw/weather-{year}.csv", index=False)
    record = collect(
        _read_table_params("data/raw/weather-*.csv"),
        out_dir=tmp_path / "snap",
        data_dir=tmp_path / "data",
    )
    assert sum(s.rows for s in record.splits.values()) == len(df) == 1461


def test_read_table_passes_options_to_the_reader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True)
    _seattle_table().to_csv(tmp_path / "data/raw/w.csv", index=False, sep=";")
    params = _read_table_params("data/raw/w.csv", sep="';'")
    record = collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path / "data")
    assert sum(s.rows for s in record.splits.values()) == 1461


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("data/raw/none-*.csv", ["matches no file", "data/raw/none-*.csv"]),
        ("w.xlsx", ["w.xlsx", "unknown format"]),
    ],
)
def test_read_table_refuses_in_one_line(tmp_path, monkeypatch, name, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.xlsx").write_bytes(b"not a table")
    with pytest.raises(DataError) as info:
        collect(_read_table_params(name), out_dir=tmp_path / "snap", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
