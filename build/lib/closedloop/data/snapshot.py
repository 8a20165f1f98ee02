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
from closedloop.paths import SCHEMA, SNAPSHOT_DIR


# ------------------------------------------------------------------------ sources
def load_source(cfg: dict, allowed: Sequence[str]) -> pd.DataFrame:
    """The raw table ``dataset.source`` names (closedloop.data.sources or a user's function)."""
    df = instantiate(cfg["source"], allowed, "dataset.source")
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"dataset.source: {cfg['source']['_target_']} returned {type(df).__name__}, "
            "not a pandas DataFrame"
        )
    return df


# ------------------------------------------------------------------- schema checks
def resolve_columns(cfg: dict, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Feature names and classes: as declared, or inferred from the source when null."""
    reserved = {cfg["target"], cfg.get("time_column")}
    features = cfg["features"] or [c for c in df.columns if c not in reserved]
    classes = cfg["classes"] or sorted(df[cfg["target"]].astype(str).unique().tolist())
    return list(features), [str(c) for c in classes]


def frame_schema(cfg: dict, features: list[str], classes: list[str]) -> pa.DataFrameSchema:
    """The pandera schema of a snapshot split: finite numeric features, known labels."""
    columns = {
        f: pa.Column(
            float, checks=pa.Check(np.isfinite, element_wise=False), coerce=True, nullable=False
        )
        for f in features
    }
    columns[cfg["target"]] = pa.Column(
        str, checks=pa.Check.isin(classes), coerce=True, nullable=False
    )
    if cfg.get("time_column"):
        columns[cfg["time_column"]] = pa.Column("datetime64[ns]", coerce=True, nullable=False)
    return pa.DataFrameSchema(columns, strict="filter", coerce=True)


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
    """Apply the declared split: inclusive date ranges, or seeded stratified fractions."""
    sp = cfg["split"]
    if sp["strategy"] == "time":
        t = pd.to_datetime(df[cfg["time_column"]])
        out = {}
        for name in SPLITS:
            r = sp[name]
            mask = (t >= pd.Timestamp(r["start"])) & (t <= pd.Timestamp(r["end"]))
            out[name] = df.loc[mask].sort_values(cfg["time_column"], kind="stable")
    else:
        from sklearn.model_selection import train_test_split

        fr = sp["fractions"]
        y = df[cfg["target"]]
        rest, prod = train_test_split(df, test_size=fr["production"], random_state=seed, stratify=y)
        val_share = fr["val"] / (fr["train"] + fr["val"])
        train, val = train_test_split(
            rest, test_size=val_share, random_state=seed, stratify=rest[cfg["target"]]
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


def tensors(df: pd.DataFrame, schema: SnapshotSchema) -> tuple[np.ndarray, np.ndarray]:
    """Features as float32 and labels as class indices, in the snapshot's declared order."""
    x = df[schema.features].to_numpy(dtype=np.float32)
    index = {c: i for i, c in enumerate(schema.classes)}
    y = df[schema.target].astype(str).map(index).to_numpy(dtype=np.int64)
    return x, y
