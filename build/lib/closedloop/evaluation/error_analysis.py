"""Stage `errors`: error analysis of the candidate on the production window.

Every misprediction becomes a row with its failure type (true → predicted class), time,
confidence, impact and slice labels, in reports/errors.parquet; reports/errors.md (template
errors.md.j2) summarises the top confusions and the errors by time bucket, slice and confidence. Impact is the
confidence the model had in its wrong answer: a sure mistake costs more than a coin flip.

    python -m pipelines.errors                    # the stage (what dvc repro runs)
    closedloop errors show --type "rain->sun" --since 2014-10-01 --min-impact 0.8
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from closedloop import templating
from closedloop.errors import DataError
from closedloop.io import atomic_path, write_text
from closedloop.paths import ERRORS_MD, ERRORS_TABLE, EVAL_DIR

ARROW = "→"
CONFIDENCE_BINS = [0.0, 0.5, 0.7, 0.9, 1.0000001]
CONFIDENCE_LABELS = ["< 0.5", "0.5-0.7", "0.7-0.9", ">= 0.9"]


def mispredictions(frame: pd.DataFrame, split: str, time_column: str | None) -> pd.DataFrame:
    """The wrong rows of a per-example eval table, with failure type and impact."""
    wrong = frame[frame["actual"].astype(str) != frame["predicted"].astype(str)]
    out = pd.DataFrame(
        {
            "split": split,
            "row": wrong["row"].to_numpy(),
            "time": pd.to_datetime(wrong[time_column]).to_numpy() if time_column else pd.NaT,
            "actual": wrong["actual"].astype(str).to_numpy(),
            "predicted": wrong["predicted"].astype(str).to_numpy(),
            "confidence": wrong["confidence"].to_numpy(dtype=float),
        }
    )
    out["failure_type"] = out["actual"] + ARROW + out["predicted"]
    out["impact"] = out["confidence"]
    for column in [c for c in frame.columns if c.startswith("slice_")]:
        out[column] = wrong[column].astype(str).to_numpy()
    return out.reset_index(drop=True)


def load_eval(split: str, eval_dir: Path = EVAL_DIR) -> tuple[pd.DataFrame, str | None]:
    path = Path(eval_dir) / f"{split}.csv"
    if not path.exists():
        raise DataError(f"{path}: missing; run `dvc repro evaluate` first")
    frame = pd.read_csv(path, dtype={"actual": str, "predicted": str})
    known = {"row", "actual", "predicted", "confidence", "champion_predicted"}
    time_column = next(
        (c for c in frame.columns if c not in known and not c.startswith(("p_", "slice_"))), None
    )
    return frame, time_column


def _rows(frame: pd.DataFrame, names: list[str]) -> list[dict]:
    """A grouped table as plain rows, rounded to 3 places, for the template."""
    frame = frame.round(3).reset_index()
    frame.columns = names
    return frame.to_dict("records")


def summary(errors: pd.DataFrame, total: int, top: int = 10) -> str:
    """reports/errors.md (template errors.md.j2): the top confusions, then the errors by
    time, slice and confidence."""
    n = len(errors)
    context: dict = {"errors": n, "total": total, "share": n / max(total, 1)}
    if n == 0:
        return templating.render("errors.md.j2", **context)
    by_type = (
        errors.groupby("failure_type")
        .agg(
            errors=("row", "size"), mean_confidence=("confidence", "mean"), impact=("impact", "sum")
        )
        .sort_values(["impact", "errors"], ascending=False)
        .head(top)
    )
    context["top"] = _rows(by_type, ["failure_type", "errors", "mean_confidence", "impact"])
    context["months"] = []
    if errors["time"].notna().any():
        by_month = (
            errors.assign(month=errors["time"].dt.strftime("%Y-%m"))
            .groupby("month")
            .agg(errors=("row", "size"), mean_confidence=("confidence", "mean"))
        )
        context["months"] = _rows(by_month, ["month", "errors", "mean_confidence"])
    context["slices"] = [
        {
            "name": column.removeprefix("slice_"),
            "rows": _rows(
                errors.groupby(column).agg(
                    errors=("row", "size"), mean_confidence=("confidence", "mean")
                ),
                ["value", "errors", "mean_confidence"],
            ),
        }
        for column in errors.columns
        if column.startswith("slice_")
    ]
    bucket = pd.cut(errors["confidence"], CONFIDENCE_BINS, labels=CONFIDENCE_LABELS, right=False)
    by_conf = errors.groupby(bucket, observed=False).size()
    context["confidence"] = [{"bucket": b, "errors": int(k)} for b, k in by_conf.items()]
    return templating.render("errors.md.j2", **context)


def build(split: str = "production") -> tuple[pd.DataFrame, str]:
    frame, time_column = load_eval(split)
    errors = mispredictions(frame, split, time_column)
    return errors, summary(errors, len(frame))


def query(
    errors: pd.DataFrame,
    failure_type: str | None = None,
    since: str | None = None,
    until: str | None = None,
    min_impact: float = 0.0,
    slice_filter: str | None = None,
) -> pd.DataFrame:
    """Filter the error table by failure type, time range, impact and slice."""
    out = errors
    if failure_type:
        wanted = failure_type.replace("->", ARROW)
        if ARROW not in wanted:
            raise DataError(f"--type {failure_type!r}: expected TRUE->PREDICTED, e.g. rain->sun")
        out = out[out["failure_type"] == wanted]
    for bound, keep in ((since, lambda t, b: t >= b), (until, lambda t, b: t <= b)):
        if bound:
            try:
                stamp = pd.Timestamp(bound)
            except ValueError:
                raise DataError(f"{bound!r}: not a date (YYYY-MM-DD)") from None
            out = out[keep(out["time"], stamp)]
    out = out[out["impact"] >= min_impact]
    if slice_filter:
        name, _, value = slice_filter.partition("=")
        column = f"slice_{name}"
        if column not in out.columns or not value:
            slices = [c.removeprefix("slice_") for c in errors.columns if c.startswith("slice_")]
            raise DataError(f"--slice {slice_filter!r}: expected NAME=VALUE with NAME in {slices}")
        out = out[out[column] == value]
    return out.sort_values(["impact", "row"], ascending=[False, True])


def write_errors(split: str = "production") -> pd.DataFrame:
    """The errors stage: the table and its summary, written atomically."""
    errors, text = build(split)
    with atomic_path(ERRORS_TABLE) as tmp:
        errors.to_parquet(tmp, index=False)
    write_text(ERRORS_MD, text)
    return errors


def read_errors() -> pd.DataFrame:
    if not ERRORS_TABLE.exists():
        raise DataError(f"{ERRORS_TABLE}: missing; run `dvc repro errors` first")
    return pd.read_parquet(ERRORS_TABLE)
