"""collect: real offline data, declared splits, schema errors that name the column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop.config import compose
from closedloop.data.collect import collect
from closedloop.data.snapshot import frame_schema, read_schema, read_split, validate_frame
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


def _schema(params):
    ds = params["dataset"]
    return frame_schema(ds, ds["features"], ds["classes"])


def test_schema_rejects_non_finite_feature_naming_the_column(tiny_params):
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    df.loc[5, "wind"] = np.inf
    with pytest.raises(DataError, match="'wind'"):
        validate_frame(df, _schema(tiny_params), "seattle")


def test_schema_rejects_unknown_label_naming_the_column(tiny_params):
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    df.loc[3, "weather"] = "hail"
    with pytest.raises(DataError, match="'weather'") as info:
        validate_frame(df, _schema(tiny_params), "seattle")
    assert "hail" in str(info.value) and "\n" not in str(info.value)


def test_declared_column_missing_from_source(tmp_path):
    params = compose(["dataset.features=[precipitation,humidity]"], conf_dir=ROOT / "conf")
    with pytest.raises(DataError, match="humidity"):
        collect(params, out_dir=tmp_path / "snap", data_dir=tmp_path)
    assert not (tmp_path / "snap").exists(), "a failed collect must not leave a partial snapshot"


# ------------------------------------------------------------------- read_table
def _seattle_table() -> pd.DataFrame:
    from vega_datasets import local_data

    return local_data.seattle_weather()


def _read_table_params(path: str, **options) -> dict:
    overrides = [
        "dataset.source._target_=closedloop.data.sources.read_table",
        f"+dataset.source.path={path}",
        *(f"+dataset.source.{k}={v}" for k, v in options.items()),
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
