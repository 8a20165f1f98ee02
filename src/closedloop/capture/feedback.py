"""Production feedback exported into data/feedback/: read, validate, quarantine, join.

`closedloop export` writes immutable partitions, one kind per file:
``data/feedback/date=YYYY-MM-DD/part-predictions-<seq>-<seq>.parquet`` (request_id, ts,
model_version, event_time, prediction, probabilities, latency_ms, one ``x_<feature>`` column
per feature) and ``part-feedback-...parquet`` (request_id, ts, label, action, source).

Only files the exporter names so count (``feedback/date=YYYY-MM-DD/part-<kind>-<n>-<m>.parquet``);
anything else under data/feedback/ is listed as ignored. A file that cannot be read as
Parquet (truncated, empty, not Parquet at all) is quarantined whole, named, with the reason,
and collect goes on with the rest. The exporter stamps each file with its export time: a
row dated after it (its ``ts``, or its ``event_time``'s day) is quarantined. Feedback
answers follow the one rule the server applies (closedloop.capture.rules).

Two paths, one verdict. A file whose column types are the exporter's is checked in Arrow,
vectorised; only the rows that fail go through pandera, which writes the reasons (and has
the last word: a row pandera accepts is kept). A file with other types (written by hand or
by another tool) goes through pandera whole, after coercion. tests/test_feedback.py checks
that both paths reach the same verdict on every corrupt row.

Files are read one at a time and only the columns collect needs stay in memory, in Arrow;
only the labelled rows become a DataFrame. Every row is either kept or quarantined with a
reason and its raw record: counts in = kept + quarantined, per kind.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pdm
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop.capture.rules import FeedbackRule, rule_for

PREDICTIONS = "part-predictions-"
FEEDBACK = "part-feedback-"
# What the exporter writes under data/feedback/, and nothing else counts as feedback.
PART = re.compile(
    r"date=(?P<date>\d{4}-\d{2}-\d{2})/part-(?P<kind>predictions|feedback)-"
    r"(?P<first>\d+)-(?P<last>\d+)\.parquet"
)
WATERMARK = "_watermark.json"  # the exporter's record of what has moved
EXPORTED_AT = b"closedloop.exported_at"  # Parquet metadata: when the exporter wrote the file
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)  # clock skew between servers and the exporter
QUARANTINE_COLUMNS = ["kind", "file", "request_id", "reason", "record"]
TS = pa.timestamp("us", tz="UTC")
STR = pa.string()


@dataclass
class Feedback:
    """Labelled production rows in snapshot form, plus what was rejected and why."""

    labelled: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # the partitions read
    ignored: list[Path] = field(default_factory=list)  # anything else under data/feedback/


def scan(data_dir: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """The exporter's partitions under data/feedback/, by kind, and every other file there."""
    root = Path(data_dir) / "feedback"
    found: dict[str, list[Path]] = {"predictions": [], "feedback": []}
    other = []
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        if path.is_dir() or path == root / WATERMARK:
            continue
        m = PART.fullmatch(path.relative_to(root).as_posix())
        if m and int(m.group("first")) <= int(m.group("last")):
            found[m.group("kind")].append(path)
        else:
            other.append(path)
    return found, other


def partitions(data_dir: Path, prefix: str) -> list[Path]:
    """The exporter's partitions of one kind (``PREDICTIONS`` or ``FEEDBACK``)."""
    return scan(data_dir)[0][prefix.removeprefix("part-").rstrip("-")]


# ---------------------------------------------------------------------- the rules
class _Rules:
    """One kind's rules: the pandera schema (reasons) and the same checks in Arrow (speed)."""

    kind: str
    required: list[str]
    columns: dict[str, pa.DataType]  # what collect keeps, in Arrow types

    def __init__(self, now: pd.Timestamp):
        self.now = now

    def limit(self, schema: pa.Schema) -> tuple[pd.Timestamp, str]:
        """The latest time a row of this file may carry, and what sets it.

        The file's export time where the exporter stamped it (never later than now), else
        now; plus the clock skew servers may have.
        """
        stamp = (schema.metadata or {}).get(EXPORTED_AT)
        try:
            exported = pd.Timestamp(stamp.decode()) if stamp else None
        except ValueError:
            exported = None
        if exported is not None and exported.tzinfo is not None and exported <= self.now:
            return exported + FUTURE_TOLERANCE, f"not after its export at {exported.isoformat()}"
        return self.now + FUTURE_TOLERANCE, "not in the future"

    def exported(self, schema: pa.Schema) -> bool:
        """Whether a file has the exporter's column types (then the Arrow path applies)."""
        return all(
            _type_ok(schema.field(c).type, t) for c, t in self.columns.items() if c in schema.names
        )

    def valid(self, t: pa.Table, limit: tuple) -> np.ndarray:
        raise NotImplementedError

    def reasons(self, raw: pd.DataFrame, limit: tuple) -> tuple[pd.DataFrame, pd.Series]:
        raise NotImplementedError

    def _common(self, t: pa.Table, limit: tuple) -> pa.ChunkedArray:
        ids, ts = t["request_id"], pc.cast(t["ts"], TS, safe=False)
        latest = pa.scalar(limit[0].to_pydatetime(), type=TS)
        return pc.and_kleene(pc.greater_equal(pc.utf8_length(ids), 1), pc.less_equal(ts, latest))

    def _base_schema(self, limit: tuple) -> dict:
        latest, why = limit
        return {
            "request_id": pdm.Column(str, pdm.Check.str_length(min_value=1), nullable=False),
            "ts": pdm.Column(
                "datetime64[ns, UTC]", pdm.Check(lambda ts: ts <= latest, name=why), nullable=False
            ),
        }


class _PredictionRules(_Rules):
    kind = "prediction"

    def __init__(
        self,
        now: pd.Timestamp,
        features: list[str],
        categorical: tuple[str, ...] | list[str] = (),
        imputed: tuple[str, ...] | list[str] = (),
    ):
        super().__init__(now)
        self.features = [f"x_{f}" for f in features]  # numeric
        self.categorical = [f"x_{f}" for f in categorical]  # text (the server writes strings)
        self.nullable = {f"x_{f}" for f in imputed}  # a missing value the encoding imputes
        self.required = ["request_id", "ts", *self.features, *self.categorical]
        self.columns = {
            "request_id": STR,
            "ts": TS,
            "event_time": STR,
            "prediction": STR,
            **dict.fromkeys(self.features, pa.float64()),
            **dict.fromkeys(self.categorical, STR),
        }

    def schema(self, limit: tuple) -> pdm.DataFrameSchema:
        last_day = _last_day(limit)
        return pdm.DataFrameSchema(
            {
                **self._base_schema(limit),
                "event_time": pdm.Column(
                    object,
                    pdm.Check(
                        lambda s: s.isna() | (s.str.slice(0, 10) <= last_day),
                        name=f"a day on or before {last_day} ({limit[1]})",
                    ),
                    nullable=True,
                    required=False,
                ),
                **{
                    f: pdm.Column(
                        float,
                        pdm.Check(np.isfinite, element_wise=False),
                        nullable=f in self.nullable,
                    )
                    for f in self.features
                },
                **{f: pdm.Column(object, nullable=f in self.nullable) for f in self.categorical},
            }
        )

    def valid(self, t: pa.Table, limit: tuple) -> np.ndarray:
        ok = self._common(t, limit)
        if "event_time" in t.column_names:  # its day, as the ISO text begins: cheap, vectorised
            day = pc.utf8_slice_codeunits(pc.cast(t["event_time"], STR), 0, 10)
            on_time = pc.less_equal(day, pa.scalar(_last_day(limit)))
            ok = pc.and_kleene(ok, pc.or_kleene(pc.is_null(day), on_time))
        for f in self.features:
            finite = pc.is_finite(pc.cast(t[f], pa.float64()))
            ok = pc.and_kleene(ok, pc.fill_null(finite, f in self.nullable))
        for f in self.categorical:
            if f not in self.nullable:
                ok = pc.and_kleene(ok, pc.is_valid(t[f]))
        return _mask(ok)

    def reasons(self, raw: pd.DataFrame, limit: tuple) -> tuple[pd.DataFrame, pd.Series]:
        df = raw.copy()
        df["request_id"] = _strings(df["request_id"])
        df["ts"] = _timestamps(df["ts"])
        checked = list(self.required)
        if "event_time" in df.columns:
            df["event_time"] = df["event_time"].map(lambda v: None if pd.isna(v) else str(v))
            checked.append("event_time")
        for f in self.features:
            df[f] = pd.to_numeric(df[f], errors="coerce").astype(float)
        for f in self.categorical:
            df[f] = df[f].map(lambda v: None if _value(v) is None else str(v))
        return df, _pandera_reasons(df[checked], raw, self.schema(limit))


class _FeedbackRules(_Rules):
    kind = "feedback"

    def __init__(self, now: pd.Timestamp, rule: FeedbackRule):
        super().__init__(now)
        self.rule = rule
        self.required = ["request_id", "ts", "label"]
        self.columns = {"request_id": STR, "ts": TS, "label": STR, "action": STR, "source": STR}

    def valid(self, t: pa.Table, limit: tuple) -> np.ndarray:
        label = pc.cast(t["label"], STR)
        action = pc.cast(t["action"], STR) if "action" in t.column_names else None
        if action is None:
            action = pa.nulls(t.num_rows, STR)
        return _mask(pc.and_kleene(self._common(t, limit), self.rule.valid(label, action)))

    def reasons(self, raw: pd.DataFrame, limit: tuple) -> tuple[pd.DataFrame, pd.Series]:
        df = raw.copy()
        df["request_id"] = _strings(df["request_id"])
        df["ts"] = _timestamps(df["ts"])
        df["label"] = df["label"].where(df["label"].isna(), df["label"].astype(str))
        df["action"] = df.get("action", pd.Series(None, index=df.index, dtype=object))
        df["source"] = df.get("source", pd.Series("unknown", index=df.index, dtype=object))
        schema = pdm.DataFrameSchema(self._base_schema(limit))
        reasons = _pandera_reasons(df[["request_id", "ts"]], raw, schema)
        answers = zip(df["label"].map(_value), df["action"].map(_value), strict=True)
        problems = [self.rule.problem(label, action) or "" for label, action in answers]
        joined = [r for r in zip(reasons.to_numpy(), problems, strict=True)]
        reasons[:] = ["; ".join(filter(None, pair)) for pair in joined]
        return df, reasons


def _value(v):
    """A cell as the rule sees it: None for any missing value."""
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _last_day(limit: tuple) -> str:
    """The latest day an event_time may begin with: the limit's UTC day plus one (a local
    date can run up to a day ahead of UTC)."""
    return (limit[0] + pd.Timedelta(days=1)).strftime("%Y-%m-%d")


def _type_ok(actual: pa.DataType, wanted: pa.DataType) -> bool:
    if pa.types.is_null(actual):
        return True
    if wanted == TS:
        return pa.types.is_timestamp(actual) and actual.tz in ("UTC", "+00:00", "Etc/UTC")
    if pa.types.is_floating(wanted):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual)
    return pa.types.is_string(actual) or pa.types.is_large_string(actual)


def _mask(ok) -> np.ndarray:
    return pc.fill_null(ok, False).to_numpy(zero_copy_only=False).astype(bool)


def _strings(series: pd.Series) -> pd.Series:
    return series.astype("string").astype(object)


def _timestamps(series: pd.Series) -> pd.Series:
    """UTC timestamps in the schema's unit; unparseable values become NaT (then quarantined)."""
    return pd.to_datetime(series, errors="coerce", utc=True).astype("datetime64[ns, UTC]")


def _pandera_reasons(df: pd.DataFrame, raw: pd.DataFrame, schema) -> pd.Series:
    """Validate with pandera; return one reason per failing row (empty string if valid).

    Each reason names the column, the failed check and the raw value, e.g.
    ``x_wind: fails isfinite (got inf)``; a row failing several checks lists them all.
    """
    reasons = pd.Series("", index=df.index, dtype=object)
    try:
        schema.validate(df, lazy=True)
    except pdm.errors.SchemaErrors as e:
        cases = e.failure_cases.dropna(subset=["index"]).reset_index(drop=True)
        got = pd.Series(cases["failure_case"].map(repr), dtype=object)
        for column, group in cases.groupby("column", sort=False):
            if column in raw.columns:  # the raw value, not pandera's coerced one
                values = raw[column].to_numpy()[group["index"].astype(int).to_numpy()]
                got[group.index] = [repr(v) for v in values]
        parts = cases["column"] + ": fails " + cases["check"].astype(str) + " (got " + got + ")"
        joined = parts.groupby(cases["index"].astype(int).to_numpy(), sort=True).agg("; ".join)
        reasons[joined.index] = joined.to_numpy()
    return reasons


# ------------------------------------------------------------------- reading files
class _Reader:
    """Reads one kind's partitions: kept rows (Arrow, collect's columns) and rejected rows."""

    def __init__(self, rules: _Rules, files: list[Path]):
        self.rules, self.files = rules, files
        self.rows_in = 0
        self.rejected: list[pd.DataFrame] = []
        self.unreadable: list[pd.DataFrame] = []  # whole files, one row each

    def read(self) -> pa.Table:
        kept = [self._guarded(i, path) for i, path in enumerate(self.files)]
        kept = [t for t in kept if t is not None]
        return pa.concat_tables(kept) if kept else self._empty()

    def _guarded(self, index: int, path: Path) -> pa.Table | None:
        """One file; if it cannot be read or used, quarantine it whole and go on."""
        rows_in, rejected = self.rows_in, len(self.rejected)
        try:
            return self._file(index, path)
        except (pa.ArrowException, OSError) as e:
            self.rows_in, self.rejected[rejected:] = rows_in, []  # nothing of it counts
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            size = path.stat().st_size if path.exists() else 0
            self.unreadable.append(
                pd.DataFrame(
                    {
                        "kind": ["file"],
                        "file": [str(path)],
                        "request_id": [None],
                        "reason": [f"unreadable {self.rules.kind} partition: {why}"],
                        "record": [json.dumps({"bytes": size})],
                    },
                    columns=QUARANTINE_COLUMNS,
                )
            )
            return None

    def _file(self, index: int, path: Path) -> pa.Table | None:
        schema = pq.read_schema(path)
        limit = self.rules.limit(schema)
        missing = [c for c in self.rules.required if c not in schema.names]
        if missing or not self.rules.exported(schema):
            table = pq.read_table(path)
            if missing:
                self.rows_in += table.num_rows
                everything = np.arange(table.num_rows)
                self._reject(path, table, everything, f"missing column(s) {missing}")
                return None
            raw = table.to_pandas()
            df, reasons = self.rules.reasons(raw, limit)
            good = (reasons == "").to_numpy()
            kept = self._canonical(df[good], index, np.flatnonzero(good))
            self.rows_in += table.num_rows
            self._reject(path, table, np.arange(table.num_rows), reasons.to_numpy())
            return kept
        # The exporter's types: read only collect's columns and check them in Arrow.
        table = pq.read_table(path, columns=[c for c in self.rules.columns if c in schema.names])
        keep = self.rules.valid(table, limit)
        bad = np.flatnonzero(~keep)
        if len(bad):
            whole = _whole(path, self.rules.columns)
            _, reasons = self.rules.reasons(whole.take(bad).to_pandas(), limit)
            keep[bad[(reasons == "").to_numpy()]] = True  # pandera has the last word
            self._reject(path, whole, bad, reasons.to_numpy())
        self.rows_in += table.num_rows
        return self._canonical(table.filter(keep), index, np.flatnonzero(keep))

    def _canonical(self, rows, index: int, positions: np.ndarray) -> pa.Table:
        """Collect's columns in their Arrow types, plus where each row came from."""
        n = len(positions)
        arrays = {}
        for name, wanted in self.rules.columns.items():
            if isinstance(rows, pd.DataFrame):
                column = rows[name] if name in rows.columns else pd.Series(None, index=rows.index)
                if wanted == STR:
                    column = column.map(lambda v: None if pd.isna(v) else str(v), na_action=None)
                arrays[name] = pa.array(column, from_pandas=True).cast(wanted, safe=False)
            elif name in rows.column_names:
                arrays[name] = pc.cast(rows[name], wanted, safe=False)
            else:
                arrays[name] = pa.nulls(n, wanted)
        arrays["_file"] = pa.array(np.full(n, index, dtype=np.int32))
        arrays["_row"] = pa.array(positions.astype(np.int64))
        return pa.table(arrays)

    def _empty(self) -> pa.Table:
        return self._canonical(pa.table({}), 0, np.arange(0))

    def _reject(self, path: Path, table: pa.Table, positions: np.ndarray, reasons) -> None:
        reasons = np.broadcast_to(np.asarray(reasons, dtype=object), positions.shape)
        chosen = reasons != ""
        if chosen.any():
            self.rejected.append(
                _quarantine(self.rules.kind, path, table, positions[chosen], reasons[chosen])
            )

    def reject_kept(self, kept: pa.Table, where: np.ndarray, reasons) -> None:
        """Quarantine rows found bad across files (duplicates, unknown ids), with raw records."""
        files = kept["_file"].to_numpy()[where]
        rows = kept["_row"].to_numpy()[where]
        reasons = np.broadcast_to(np.asarray(reasons, dtype=object), where.shape)
        for f in np.unique(files):
            mine = files == f
            path = self.files[f]
            whole = _whole(path, self.rules.columns)
            self.rejected.append(
                _quarantine(self.rules.kind, path, whole, rows[mine], reasons[mine])
            )


def _whole(path: Path, columns) -> pa.Table:
    """Every column of a file, for quarantined raw records; only collect's columns when the
    others cannot be read (a damaged column collect does not use)."""
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError):
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in columns if c in names])


def _quarantine(kind: str, path: Path, table: pa.Table, rows: np.ndarray, reasons) -> pd.DataFrame:
    records = table.take(rows).to_pylist()
    return pd.DataFrame(
        {
            "kind": kind,
            "file": str(path),
            "request_id": [str(r.get("request_id")) for r in records],
            "reason": list(reasons),
            "record": [json.dumps(r, default=str, sort_keys=True) for r in records],
        },
        columns=QUARANTINE_COLUMNS,
    )


def _codes(ids) -> np.ndarray:
    """Integer codes for request ids: equal ids, equal codes."""
    chunks = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pc.dictionary_encode(chunks).indices.to_numpy(zero_copy_only=False)


def _first_of_each(codes: np.ndarray) -> np.ndarray:
    """Mask of the first row of each code, in the current row order."""
    first = np.zeros(len(codes), dtype=bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return first


def _repeats(ids: pa.ChunkedArray) -> np.ndarray:
    """Mask of the rows whose request id appeared in an earlier row.

    Finding which of a million ids repeat is one parallel hash aggregation in DuckDB (over
    the Arrow memory, no copy), several times faster than Arrow's single-threaded hashing.
    Only the rows of repeated ids are then looked at one by one.
    """
    repeated = np.zeros(len(ids), dtype=bool)
    if len(ids) < 2:
        return repeated
    id_table = pa.table({"request_id": ids})  # noqa: F841 - DuckDB finds it by name
    with duckdb.connect() as con:
        query = "SELECT request_id FROM id_table GROUP BY 1 HAVING count(*) > 1"
        again = con.sql(query).to_arrow_table()
    if again.num_rows == 0:
        return repeated
    rows = np.flatnonzero(_mask(pc.is_in(ids, value_set=again["request_id"].combine_chunks())))
    repeated[rows[~_first_of_each(_codes(ids.take(rows)))]] = True
    return repeated


# ---------------------------------------------------------------------------- load
def load(
    data_dir: Path,
    ds: dict,
    features: list[str],
    classes: list[str],
    now: pd.Timestamp | None = None,
    categorical: tuple[str, ...] | list[str] = (),
    imputed: tuple[str, ...] | list[str] = (),
    task: str = "multiclass",
) -> Feedback:
    """Join predictions with their latest feedback into labelled rows in snapshot form.
    ``features`` are the numeric features, ``categorical`` the text ones; a feature in
    ``imputed`` may be missing (the model's encoding imputes it), any other may not.
    ``task``: regression labels are finite numbers, other labels one of ``classes``."""
    now = now or pd.Timestamp(dt.datetime.now(dt.timezone.utc))
    rule = rule_for(task, classes)
    found, ignored = scan(data_dir)
    rules = _PredictionRules(now, features, categorical, imputed)
    p_reader = _Reader(rules, found["predictions"])
    f_reader = _Reader(_FeedbackRules(now, rule), found["feedback"])

    # Predictions: the first of each request id (by time, then file) wins.
    preds = p_reader.read()
    ts = pc.cast(preds["ts"], pa.int64()).to_numpy()
    if not (np.diff(ts) >= 0).all():  # read in file order, so a stable sort breaks ties by file
        preds = preds.take(np.argsort(ts, kind="stable"))
    dup = np.flatnonzero(_repeats(preds["request_id"]))
    if len(dup):
        ids = preds["request_id"].take(dup)
        rows = np.flatnonzero(_mask(pc.is_in(preds["request_id"], value_set=pc.unique(ids))))
        first = rows[_first_of_each(_codes(preds["request_id"].take(rows)))]
        where = preds["_file"].take(first).to_pylist()
        winner = dict(zip(preds["request_id"].take(first).to_pylist(), where, strict=True))
        reasons = [
            f"duplicate request_id (first in {p_reader.files[winner[i]]})" for i in ids.to_pylist()
        ]
        p_reader.reject_kept(preds, dup, reasons)
        keep = np.ones(preds.num_rows, dtype=bool)
        keep[dup] = False
        preds = preds.filter(keep)

    # Feedback: known request ids only; the latest answer for each one counts. Only the
    # predictions that have an answer are taken (probing them is cheap; hashing all is not).
    fb = f_reader.read()
    answered = preds.filter(pc.is_in(preds["request_id"], value_set=pc.unique(fb["request_id"])))
    position = pc.index_in(fb["request_id"], value_set=answered["request_id"].combine_chunks())
    unknown = np.flatnonzero(_mask(pc.is_null(position)))
    if len(unknown):
        ids = fb["request_id"].take(unknown).to_pylist()
        f_reader.reject_kept(
            fb, unknown, [f"request_id: no prediction with this id (got {r!r})" for r in ids]
        )
        fb = fb.filter(pc.is_valid(position))
        position = position.filter(pc.is_valid(position))
    newest_first = pc.sort_indices(fb, [("ts", "ascending")]).to_numpy()[::-1]
    latest = newest_first[_first_of_each(_codes(fb["request_id"].take(newest_first)))]
    latest = latest[np.argsort(position.to_numpy(zero_copy_only=False)[latest], kind="stable")]
    joined = answered.take(position.take(latest))
    labelled = _labelled(
        joined, fb.take(latest), ds, [*features, *categorical], classes, rule, task
    )
    undated = int(labelled.pop("_undated").sum())

    rejected = [r for r in p_reader.rejected + f_reader.rejected if len(r)]
    unreadable = p_reader.unreadable + f_reader.unreadable
    quarantine = (
        pd.concat(rejected + unreadable, ignore_index=True)
        if rejected or unreadable
        else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    )
    rows_rejected = sum(map(len, rejected))
    counts = {
        "predictions_in": p_reader.rows_in,
        "predictions_kept": preds.num_rows,
        "feedback_in": f_reader.rows_in,
        "feedback_kept": fb.num_rows,
        "quarantined": rows_rejected,
        "files_quarantined": len(unreadable),
        "files_ignored": len(ignored),
        "labelled_rows": len(labelled),
        "labelled_undated": undated,
    }
    kept_plus_rejected = counts["predictions_kept"] + counts["feedback_kept"] + rows_rejected
    if kept_plus_rejected != counts["predictions_in"] + counts["feedback_in"]:
        raise AssertionError(f"feedback rows lost: {counts}")  # a bug here, never bad data
    files = p_reader.files + f_reader.files
    return Feedback(labelled, quarantine, counts, sorted(files), ignored)


def _labelled(
    joined: pa.Table,
    answer: pa.Table,
    ds: dict,
    features: list[str],
    classes: list[str],
    rule: FeedbackRule,
    task: str,
) -> pd.DataFrame:
    """Labelled rows in snapshot form: the label each latest answer gives (the rule's)."""
    label = rule.given(answer["label"], answer["action"], joined["prediction"]).to_pandas()
    ts = joined["ts"].to_pandas()
    when = pd.to_datetime(
        joined["event_time"].to_pandas(), errors="coerce", utc=True, format="ISO8601"
    )
    undated = when.isna().to_numpy()
    when = when.where(when.notna(), ts)
    labelled = pd.DataFrame({f: joined[f"x_{f}"].to_numpy(zero_copy_only=False) for f in features})
    labelled[ds["target"]] = label.astype(object).to_numpy()
    labelled["_when"] = when.dt.tz_localize(None).astype("datetime64[ns]").to_numpy()
    source = answer["source"].to_pandas().fillna("unknown").astype(str)
    labelled["origin"] = ("feedback:" + source).to_numpy()
    labelled["_undated"] = undated  # no event_time: dated by when it was served
    # No label (a reject without one), or an accepted prediction the dataset does not know.
    if task == "regression":  # the rule kept only finite numbers (or none at all)
        labelled = labelled[labelled[ds["target"]].notna()]
        labelled[ds["target"]] = labelled[ds["target"]].astype(float)
    else:
        labelled = labelled[labelled[ds["target"]].isin(classes)]
    return labelled.sort_values("_when", kind="stable").reset_index(drop=True)
