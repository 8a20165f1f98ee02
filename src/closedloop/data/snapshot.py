"""Datasets: the configured source, the declared splits, schema checks and the snapshot format.

A snapshot is what collect writes and every later stage reads: one Parquet file per split
(features, label, optional time column) plus schema.json with the resolved feature names,
classes and a content hash of each split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.config import SPLITS
from closedloop.errors import DataError
from closedloop.instantiate import instantiate
from closedloop.models.encoding import policies
from closedloop.paths import SCHEMA, SNAPSHOT_DIR


# ------------------------------------------------------------------------ sources
def load_source(cfg: dict, allowed: Sequence[str]) -> pd.DataFrame:
    """The raw table ``dataset.source`` names (closedloop.data.sources or a user's function)."""
    try:
        df = instantiate(cfg["source"], allowed, "dataset.source")
    except DataError as e:  # a source's own refusal: name the dataset file that set it
        where = f"conf/dataset/{cfg['name']}.yaml"
        raise DataError(e if str(e).startswith(where) else f"{where}: {e}") from None
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"dataset.source: {cfg['source']['_target_']} returned {type(df).__name__}, "
            "not a pandas DataFrame"
        )
    return df


# ------------------------------------------------------------------- schema checks
def resolve_columns(cfg: dict, df: pd.DataFrame) -> tuple[list[str], list[str], list[str] | None]:
    """Numeric and categorical features and the declared classes (None: learnt from train).
    ``features.numeric: null`` takes every column the source returns not named elsewhere."""
    categorical = list(cfg["features"]["categorical"])
    reserved = {cfg["target"], cfg.get("time_column"), *categorical}
    numeric = cfg["features"]["numeric"]
    if numeric is None:
        numeric = [c for c in df.columns if c not in reserved]
    if cfg["task"] == "regression":  # a number: no classes
        return list(numeric), categorical, []
    classes = [str(c) for c in cfg["classes"]] if cfg["classes"] else None
    return list(numeric), categorical, classes


def check_columns(cfg: dict, df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> None:
    """Every declared column is in the table and every numeric feature holds numbers, or one
    line naming the dataset file, the key and the column."""
    where = f"conf/dataset/{cfg['name']}.yaml"
    declared = [
        *(("dataset.features.numeric", c) for c in numeric),
        *(("dataset.features.categorical", c) for c in categorical),
        ("dataset.target", cfg["target"]),
        *([("dataset.time_column", cfg["time_column"])] if cfg.get("time_column") else []),
    ]
    for key, column in declared:
        if column not in df.columns:
            raise DataError(
                f"{where}: {key}: column {column!r} is not in what dataset.source "
                f"({cfg['source']['_target_']}) returned (it has: {', '.join(map(str, df.columns))})"
            )
    for column in numeric:
        values = df[column]
        if pd.api.types.is_numeric_dtype(values):
            continue
        bad = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
        if len(bad):
            raise DataError(
                f"{where}: dataset.features.numeric: column {column!r} holds text, not "
                f"numbers (e.g. {bad.iloc[0]!r}; {len(bad)} value(s)); list it under "
                "features.categorical, or fix the data"
            )


def frame_schema(cfg: dict, numeric: list[str], categorical: list[str]) -> pa.DataFrameSchema:
    """The pandera schema of a snapshot split: the declared columns, coerced to their types
    (numeric as float, categorical as text, time as datetime); missing values allowed, as
    their rows were quarantined or imputed by policy (closedloop.models.encoding)."""
    columns = {f: pa.Column(float, coerce=True, nullable=True) for f in numeric}
    columns |= {f: pa.Column(object, nullable=True) for f in categorical}
    target = float if cfg["task"] == "regression" else str
    columns[cfg["target"]] = pa.Column(target, coerce=True, nullable=False)
    if cfg.get("time_column"):
        columns[cfg["time_column"]] = pa.Column("datetime64[ns]", coerce=True, nullable=False)
    return pa.DataFrameSchema(columns, strict="filter", coerce=True)


def row_problems(
    df: pd.DataFrame,
    cfg: dict,
    numeric: list[str],
    categorical: list[str],
    classes: list[str] | None,
) -> pd.Series:
    """Why each row cannot be kept ("" when it can): a missing or unknown target, a missing
    value under the reject policy, a number that is not finite, an unreadable time."""
    reasons = pd.Series("", index=df.index, dtype=object)

    def add(mask, text) -> None:
        mask = pd.Series(mask, index=df.index).fillna(False).astype(bool)
        reasons[mask] = reasons[mask].map(lambda r: f"{r}; {text}" if r else text)

    target = df[cfg["target"]]
    add(target.isna(), f"target {cfg['target']!r}: missing")
    if cfg["task"] == "regression":  # a number, finite
        value = pd.to_numeric(target, errors="coerce")
        add(target.notna() & value.isna(), f"target {cfg['target']!r}: not a number")
        add(value.notna() & ~np.isfinite(value.fillna(0)), f"target {cfg['target']!r}: not finite")
    elif classes is not None:
        text = target.astype(str)
        unknown = target.notna() & ~text.isin(classes)
        for value in sorted(text[unknown].unique()):
            add(
                unknown & (text == value),
                f"target {cfg['target']!r}: {value!r} is not a declared class",
            )
    policy = policies(cfg, [*numeric, *categorical])
    for f in numeric:
        x = pd.to_numeric(df[f], errors="coerce")
        add(x.notna() & ~np.isfinite(x.fillna(0)), f"feature {f!r}: not finite")
        if policy[f] == "reject":
            add(x.isna(), f"feature {f!r}: missing (policy reject)")
    for f in categorical:
        if policy[f] == "reject":
            add(df[f].isna(), f"feature {f!r}: missing (policy reject)")
    if cfg.get("time_column"):
        t = pd.to_datetime(df[cfg["time_column"]], errors="coerce")
        add(t.isna(), f"time_column {cfg['time_column']!r}: missing or not a date")
    return reasons


def validate_frame(df: pd.DataFrame, schema: pa.DataFrameSchema, where: str) -> pd.DataFrame:
    """Validate, or raise DataError naming the first failing column, check and example."""
    try:
        return schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as e:
        cases = e.failure_cases
        row = cases.iloc[0]
        n = len(cases)
        column = row.get("column") or row.get("schema_context")
        example = row.get("failure_case")
        raise DataError(
            f"{where}: column {column!r} fails {row.get('check')} (e.g. {example!r}; {n} failure(s) in all)"
        ) from None


# -------------------------------------------------------------------------- splits
def split_frame(df: pd.DataFrame, cfg: dict, seed: int) -> dict[str, pd.DataFrame]:
    """Apply the declared split: inclusive date ranges; seeded fractions (stratified by label
    for classification); or, for strategy=sorted, fractions cut in ``order_by`` order (train
    lowest, production highest: a production window that really shifts)."""
    sp = cfg["split"]
    if sp["strategy"] == "time":
        t = pd.to_datetime(df[cfg["time_column"]])
        out = {}
        for name in SPLITS:
            r = sp[name]
            mask = (t >= pd.Timestamp(r["start"])) & (t <= pd.Timestamp(r["end"]))
            out[name] = df.loc[mask].sort_values(cfg["time_column"], kind="stable")
    elif sp["strategy"] == "sorted":
        fr = sp["fractions"]
        ordered = df.sort_values(sp["order_by"], kind="stable")
        a = round(fr["train"] * len(df))
        b = a + round(fr["val"] * len(df))
        out = {"train": ordered.iloc[:a], "val": ordered.iloc[a:b], "production": ordered.iloc[b:]}
    else:
        from sklearn.model_selection import train_test_split

        fr = sp["fractions"]
        strata = (lambda d: None) if cfg["task"] == "regression" else (lambda d: d[cfg["target"]])
        rest, prod = train_test_split(
            df, test_size=fr["production"], random_state=seed, stratify=strata(df)
        )
        val_share = fr["val"] / (fr["train"] + fr["val"])
        train, val = train_test_split(
            rest, test_size=val_share, random_state=seed, stratify=strata(rest)
        )
        out = {"train": train, "val": val, "production": prod}
    for name, part in out.items():
        if part.empty:
            raise DataError(f"dataset.split.{name}: selects no rows from {cfg['name']}")
    return {k: v.reset_index(drop=True) for k, v in out.items()}


def frame_hash(df: pd.DataFrame) -> str:
    """A content hash of a table: column names, dtypes and values, independent of file format."""
    h = hashlib.sha256()
    h.update(repr([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


# -------------------------------------------------------------------- the snapshot
def read_schema(snapshot: Path = SNAPSHOT_DIR) -> SnapshotSchema:
    """The schema.json of a snapshot directory."""
    return SnapshotSchema.read(Path(snapshot) / SCHEMA.name)


def read_split(name: str, snapshot: Path = SNAPSHOT_DIR) -> pd.DataFrame:
    path = Path(snapshot) / f"{name}.parquet"
    if not path.exists():
        raise DataError(f"{path}: missing split; run `dvc repro collect` first")
    return pd.read_parquet(path)


def tensors(df: pd.DataFrame, schema: SnapshotSchema, encoding) -> tuple[np.ndarray, np.ndarray]:
    """Features through the encoding (closedloop.models.encoding) as float32, and the target
    as the task's loss takes it: class indices (multiclass), the positive class as 0/1 float32
    of shape (n, 1) (binary), or the value as float32 of shape (n, 1) (regression)."""
    x, _ = encoding.transform(df)
    if schema.task == "regression":
        return x, df[schema.target].to_numpy(dtype=np.float32).reshape(-1, 1)
    index = {c: i for i, c in enumerate(schema.classes)}
    y = df[schema.target].astype(str).map(index).to_numpy(dtype=np.int64)
    if schema.task == "binary":
        return x, y.astype(np.float32).reshape(-1, 1)
    return x, y
