"""Data sources: functions that return a raw table, named by ``dataset.source._target_``.

collect calls ``dataset.source`` with its YAML arguments and validates what comes back
against the dataset's declared columns. Any function returning a pandas DataFrame can be a
source; a user's own lives in their package in src/ (add its prefix to allowed_targets).
The built-ins ship their data inside installed packages, so nothing is downloaded. A user's
own table is read_table (files), duckdb_query (SQL over files) or sql_query (a database);
their refusals are DataErrors naming the key, which collect prefixes with the dataset file.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field

from closedloop.errors import DataError

PositiveInt = Annotated[int, Field(ge=1)]


def seattle_weather() -> pd.DataFrame:
    """Seattle's daily weather 2012-2015 (vega_datasets): date, four measurements, weather."""
    from vega_datasets import local_data

    return local_data.seattle_weather()


def digits() -> pd.DataFrame:
    """scikit-learn's 8x8 handwritten digits: px_0 .. px_63 and the label column ``digit``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    df = pd.DataFrame(bunch.data, columns=[f"px_{i}" for i in range(bunch.data.shape[1])])
    df["digit"] = bunch.target.astype(str)
    return df


def breast_cancer() -> pd.DataFrame:
    """scikit-learn's Wisconsin breast cancer set (569 tumours, 30 measurements): a binary
    label ``diagnosis``, benign or malignant."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    df = pd.DataFrame(bunch.data, columns=names)
    df["diagnosis"] = np.asarray(bunch.target_names)[bunch.target]  # 0 malignant, 1 benign
    return df


def diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes set (442 patients), unscaled: age, sex, bmi, bp, six blood
    serum measurements s1..s6, and ``progression``, a measure of disease progression one year
    after baseline (a number from 25 to 346)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    df = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    df["progression"] = bunch.target
    return df


def synthetic(
    n_samples: Annotated[int, Field(ge=10)],
    n_features: PositiveInt,
    n_informative: PositiveInt,
    n_classes: Annotated[int, Field(ge=2)],
    class_sep: Annotated[float, Field(gt=0)],
    seed: int,
) -> pd.DataFrame:
    """A classification table of any size from a seed (sklearn.make_classification):
    f_0 .. f_{n_features-1} and the label column ``label``."""
    from sklearn.datasets import make_classification

    if n_informative > n_features:
        raise ValueError(f"n_informative ({n_informative}) must be <= n_features ({n_features})")
    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_classes=n_classes,
        class_sep=class_sep,
        random_state=seed,
    )
    df = pd.DataFrame(x.astype(np.float32), columns=[f"f_{i}" for i in range(x.shape[1])])
    df["label"] = y.astype(str)
    return df


def _json_lines(path: str, **options: Any) -> pd.DataFrame:
    # pandas parses JSON floats approximately unless asked not to: the same numbers as CSV.
    return pd.read_json(path, lines=True, **{"precise_float": True, **options})


READERS = {
    ".csv": pd.read_csv,
    ".tsv": lambda p, **kw: pd.read_csv(p, **{"sep": "\t", **kw}),
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".jsonl": _json_lines,
    ".ndjson": _json_lines,
}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def read_table(path: str, **options: Any) -> pd.DataFrame:
    """A table from a file, or from every file a glob matches (in sorted order, concatenated):
    CSV (.csv, .tsv), Parquet (.parquet, .pq) or JSON Lines (.jsonl, .ndjson), by extension,
    optionally compressed (.gz ...). ``path`` is relative to the repository root (where DVC
    runs stages); raw user data belongs under data/raw/, which data.dvc tracks. ``options``
    go to the pandas reader (e.g. ``sep: ";"`` for CSV, ``columns: [...]`` for Parquet)."""
    files = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise DataError(
            f"dataset.source.path: {path!r} matches no file (relative to {Path.cwd()}; raw "
            "data belongs under data/raw/)"
        )
    frames = []
    for f in files:
        suffixes = [s.lower() for s in Path(f).suffixes]
        if suffixes and suffixes[-1] in COMPRESSION:
            suffixes = suffixes[:-1]
        reader = READERS.get(suffixes[-1] if suffixes else "")
        if reader is None:
            raise DataError(
                f"dataset.source.path: {f}: unknown format (read_table reads "
                f"{', '.join(READERS)}, optionally compressed)"
            )
        try:
            frames.append(reader(f, **options))
        except (ValueError, TypeError, OSError) as e:
            raise DataError(f"dataset.source: {f}: {str(e).strip().splitlines()[0]}") from None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def duckdb_query(sql: str, views: dict[str, str] | None = None) -> pd.DataFrame:
    """The result of a DuckDB SQL query over files: ``sql`` may read files directly
    (``FROM 'data/raw/sales-*.parquet'``, CSV, Parquet or JSON by extension, globs allowed)
    or the ``views`` it names, each a path or glob (``{sales: data/raw/sales-*.parquet}``).
    Paths are relative to the repository root; raw data belongs under data/raw/."""
    import duckdb

    try:
        with duckdb.connect(":memory:") as con:
            for name, path in (views or {}).items():
                if not name.isidentifier():
                    raise DataError(f"dataset.source.views: {name!r} is not a valid table name")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM {_sql_text(path)}")
            return con.execute(sql).df()
    except duckdb.Error as e:
        raise DataError(f"dataset.source.sql: the query failed: {_first_line(e)}") from None


def sql_query(url: str, query: str, password_env: str | None = None) -> pd.DataFrame:
    """The result of a SQL query against a database SQLAlchemy can reach (``url``, e.g.
    ``sqlite:///data/raw/shop.db`` or ``postgresql+psycopg://reader@host/shop``). Keep the
    password out of the URL, and so out of params.yaml: ``password_env`` names the
    environment variable holding it. No message shows a password."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    try:
        target = make_url(url)
    except sa.exc.ArgumentError:
        raise DataError(
            "dataset.source.url: not a database URL (e.g. sqlite:///data/raw/x.db)"
        ) from None
    shown = target.render_as_string(hide_password=True)
    if password_env:
        import os

        if password_env not in os.environ:
            raise DataError(f"dataset.source.password_env: ${password_env} is not set")
        target = target.set(password=os.environ[password_env])
    secret = target.password
    try:
        engine = sa.create_engine(target)
        try:
            with engine.connect() as con:
                return pd.read_sql_query(sa.text(query), con)
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ImportError) as e:
        text = _first_line(getattr(e, "orig", None) or e)
        if secret:
            text = text.replace(str(secret), "***")
        raise DataError(f"dataset.source.query: failed on {shown}: {text}") from None


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
