"""Data sources: functions that return a raw table, named by ``dataset.source._target_``.

collect calls ``dataset.source`` with its YAML arguments and validates what comes back
against the dataset's declared columns. Any function returning a pandas DataFrame can be a
source; a user's own lives in their package in src/ (add its prefix to allowed_targets).
The built-ins ship their data inside installed packages, so nothing is downloaded.
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
