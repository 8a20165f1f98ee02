"""The feature encoding: a table's numeric and categorical columns as the model's input matrix.

One module, applied the same way by train, evaluate, drift and the server. It is learnt on
the training split (``Encoding.fit``) and saved with the weights as data, never as a pickle:
the vocabularies, medians and missing-value policies go into the model's config.json
(``"encoding"``), the standardisation stays in model.safetensors (the Classifier's buffers).

The input matrix is the numeric features, in declared order (a missing value imputed with
the train split's median), then per categorical feature one column per value seen in train,
plus ``<missing>`` and ``<oov>``: a value train never held goes to the out-of-vocabulary
bucket, which is counted, never an error. Booleans are categorical ("True" / "False").
A model saved before encodings existed has numeric features only, nothing imputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from closedloop.errors import DataError

MISSING = "<missing>"  # a categorical feature's missing value, when the policy imputes
OOV = "<oov>"  # a categorical value the train split never held


def category_text(values: pd.Series) -> pd.Series:
    """A categorical column as text, None where missing: the one spelling train, the
    snapshot, feedback and the server share (True -> "True", 3.0 -> "3", "a" -> "a")."""

    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return pd.Series([one(v) for v in values.tolist()], index=values.index, dtype=object)


def policies(ds: dict, features: list[str]) -> dict[str, str]:
    """Each feature's missing-value policy: its own entry in dataset.missing, else `default`."""
    missing = ds["missing"]
    return {f: missing.get(f, missing["default"]) for f in features}


@dataclass(frozen=True)
class Encoding:
    numeric: list[str]
    categorical: dict[str, list[str]]  # feature -> the values train held, sorted
    medians: dict[str, float] = field(default_factory=dict)  # numeric feature -> train median
    missing: dict[str, str] = field(default_factory=dict)  # feature -> impute | reject

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def width(self) -> int:
        """Columns of the input matrix (the network's in_features)."""
        return len(self.numeric) + sum(len(v) + 2 for v in self.categorical.values())

    def imputes(self, feature: str) -> bool:
        return self.missing.get(feature, "reject") == "impute"

    @classmethod
    def fit(
        cls, train: pd.DataFrame, numeric: list[str], categorical: list[str], missing: dict
    ) -> Encoding:
        """Learn medians and vocabularies on the training split."""
        medians = {}
        for f in numeric:
            m = pd.to_numeric(train[f], errors="coerce").median()
            medians[f] = 0.0 if pd.isna(m) else float(m)  # no value at all in train: 0
        vocab = {
            f: sorted({v for v in category_text(train[f]) if v is not None}) for f in categorical
        }
        return cls(list(numeric), vocab, medians, {f: missing[f] for f in [*numeric, *vocab]})

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
        """The float32 input matrix for ``df``, and per feature how many values were imputed
        ("missing") or fell in the out-of-vocabulary bucket ("oov")."""
        absent = [f for f in self.features if f not in df.columns]
        if absent:
            raise DataError(f"feature(s) {absent} are not in the table")
        blocks = []
        counts: dict[str, dict[str, int]] = {}
        for f in self.numeric:
            x = df[f].to_numpy(dtype=np.float64)
            holes = np.isnan(x)
            if holes.any():
                if not self.imputes(f):
                    raise DataError(
                        f"feature {f!r}: {int(holes.sum())} missing value(s) (policy reject)"
                    )
                x = np.where(holes, self.medians[f], x)
            counts[f] = {"missing": int(holes.sum()), "oov": 0}
            blocks.append(x[:, None])
        for f, values in self.categorical.items():
            text = category_text(df[f])
            holes = text.isna().to_numpy()
            if holes.any() and not self.imputes(f):
                raise DataError(
                    f"feature {f!r}: {int(holes.sum())} missing value(s) (policy reject)"
                )
            slots = [*values, MISSING, OOV]
            index = pd.Index(slots)
            codes = index.get_indexer(text.fillna(MISSING).to_numpy())
            oov = codes < 0
            codes = np.where(oov, len(slots) - 1, codes)
            onehot = np.zeros((len(df), len(slots)))
            onehot[np.arange(len(df)), codes] = 1.0
            counts[f] = {"missing": int(holes.sum()), "oov": int(oov.sum())}
            blocks.append(onehot)
        x = np.hstack(blocks) if blocks else np.zeros((len(df), 0))
        # Column-major, as pandas gives a numeric table: the same reductions, the same bytes.
        return x.astype(np.float32, order="F"), counts

    def labels(self, df: pd.DataFrame, feature: str) -> pd.Series:
        """A categorical feature's values as the model sees them: unseen ones as ``<oov>``."""
        text = category_text(df[feature]).fillna(MISSING)
        known = set(self.categorical[feature]) | {MISSING}
        return text.where(text.isin(known), OOV)

    def to_json(self) -> dict:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "medians": self.medians,
            "missing": self.missing,
        }

    @classmethod
    def from_config(cls, config: dict) -> Encoding:
        """The encoding a model's config.json records; numeric features only when it predates
        encodings (``"features"`` alone)."""
        enc = config.get("encoding")
        if enc is None:
            return cls(list(config["features"]), {})
        return cls(
            list(enc["numeric"]),
            {k: list(v) for k, v in enc["categorical"].items()},
            {k: float(v) for k, v in enc["medians"].items()},
            dict(enc["missing"]),
        )


def oov_counts(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Out-of-vocabulary values per categorical feature (from ``Encoding.transform``)."""
    return {f: c["oov"] for f, c in counts.items() if c["oov"]}
