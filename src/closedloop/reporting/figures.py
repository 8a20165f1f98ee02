"""The pictures of reports/benchmark.html, drawn by closedloop.reporting.plots (inline SVG).

- a forest plot of every Δ with its CI: candidate - champion for every compared metric, overall
  per split and per slice of the judged split, and candidate - each baseline;
- the candidate's calibration curve per split, against y = x;
- the confusion matrices of the candidate and the champion on the judged split, side by side,
  every class a row and a column (a class never predicted is a column of zeros);
- the drift score of every column, against its threshold.

Each figure is a title, one or more ``<svg>`` elements and a sentence saying how to read it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from closedloop import metrics as registry
from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison
from closedloop.paths import EVAL_DIR
from closedloop.reporting import plots


@dataclass(frozen=True)
class Figure:
    title: str
    svgs: list[str]
    caption: str
    kind: str = field(
        default=""
    )  # forest | calibration | confusion | predicted | drift: its css class


MAX_FOREST_SLICES = 40  # slice rows in the forest plot; the page's slice table has them all


def forest_rows(comparison: Comparison, split: str, task: str) -> tuple[list[tuple], int]:
    """The forest plot's rows, (label, Δ, low, high), each oriented so that a positive value
    is better for the candidate, and how many slice rows were left out."""
    rows = []

    def row(label: str, metric: str, e) -> tuple:
        if registry.get(metric, task).higher_is_better:
            return (label, e.delta, e.ci_low, e.ci_high)
        return (f"{label} (−Δ)", -e.delta, -e.ci_high, -e.ci_low)

    for name, comp in comparison.splits.items():
        for m in registry.task_metrics(task):
            e = comp.overall.get(m.name)
            if e is not None and e.delta is not None and e.ci_low is not None:
                rows.append(row(f"{name}: {m.name} vs champion", m.name, e))
    judged = comparison.splits.get(split)
    slices, left_out = [], 0
    if judged is not None:
        for sname, values in judged.slices.items():
            for value, s in values.items():
                for m in registry.task_metrics(task):
                    e = s.metric(m.name)
                    if e is not None and e.delta is not None and e.ci_low is not None:
                        slices.append(row(f"{split}: {m.name}, {sname}={value}", m.name, e))
        if len(slices) > MAX_FOREST_SLICES:  # the most harmful lower bounds, in their order
            keep = set(sorted(range(len(slices)), key=lambda i: slices[i][2])[:MAX_FOREST_SLICES])
            left_out = len(slices) - len(keep)
            slices = [r for i, r in enumerate(slices) if i in keep]
        rows += slices
        for bname, b in judged.baselines.items():
            for metric, e in b.metrics.items():
                rows.append(row(f"{split}: {metric} vs {bname.replace('_', ' ')}", metric, e))
    return rows, left_out


def _forest(comparison: Comparison, split: str, task: str, level: str) -> Figure | None:
    rows, left_out = forest_rows(comparison, split, task)
    if not rows:
        return None
    labels, est, lows, highs = (list(c) for c in zip(*rows, strict=True))
    more = (
        f" {left_out} more slice rows, less harmful than these {MAX_FOREST_SLICES}, are in the "
        "slice table."
        if left_out
        else ""
    )
    return Figure(
        "Δ with its confidence interval",
        [
            plots.forest_plot(
                labels,
                est,
                lows,
                highs,
                ref=0.0,
                xlabel="Δ (candidate − other); −Δ where lower is better",
            )
        ],
        f"Each row is the candidate minus the champion or a baseline on the same rows "
        f"(diamond: point estimate; bar: {level} paired bootstrap CI), its sign flipped for a "
        "metric where lower is better (marked −Δ), so right of the dashed line the candidate "
        "is always better; a bar that crosses it is a difference the data cannot confirm. "
        "Slices show only with a champion." + more,
        "forest",
    )


def _calibration(eval_dir: Path, splits: list[str]) -> Figure | None:
    svgs = []
    for split in splits:
        path = eval_dir / f"calibration_{split}.csv"
        if not path.exists():
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        svgs.append(
            plots.calibration_plot(
                [float(r["confidence"]) for r in rows],
                [float(r["accuracy"]) for r in rows],
                [int(r["count"]) for r in rows],
                title=f"Calibration, {split}",
                label="candidate (point size: rows)",
            )
        )
    if not svgs:
        return None
    return Figure(
        "Calibration",
        svgs,
        "Accuracy against mean confidence per confidence bin. On the dashed line y = x the "
        "model is as sure as it is right; below it, overconfident.",
        "calibration",
    )


def confusion_matrix(actual, predicted, classes: list[str]) -> tuple[list[list[int]], list[str]]:
    """A square matrix over ``classes`` plus any other label seen: rows true, columns predicted."""
    actual, predicted = pd.Series(actual, dtype=str), pd.Series(predicted, dtype=str)
    labels = list(classes) + sorted((set(actual) | set(predicted)) - set(classes))
    table = pd.crosstab(
        pd.Categorical(actual, categories=labels),
        pd.Categorical(predicted, categories=labels),
        dropna=False,
    )
    return table.reindex(index=labels, columns=labels, fill_value=0).astype(
        int
    ).values.tolist(), labels


def _confusion(eval_dir: Path, split: str, classes: list[str]) -> Figure | None:
    path = eval_dir / f"{split}.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.empty:
        return None
    svgs = []
    sides = [("candidate", "predicted"), ("champion", "champion_predicted")]
    for who, column in sides:
        if column in frame.columns:
            matrix, labels = confusion_matrix(frame["actual"], frame[column], classes)
            svgs.append(plots.confusion_plot(matrix, labels, title=f"{who}, {split}"))
    return Figure(
        "Confusion matrices",
        svgs,
        f"Rows: the true class; columns: the predicted class; counts of the {split} rows. "
        + ("Candidate left, champion right." if len(svgs) > 1 else "No champion yet."),
        "confusion",
    )


def _predicted(eval_dir: Path, split: str) -> Figure | None:
    """A regression's counterpart of the confusion matrices: predicted against true."""
    path = eval_dir / f"{split}.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    if frame.empty:
        return None
    sides = [("candidate", "predicted"), ("champion", "champion_predicted")]
    svgs = [
        plots.scatter_plot(frame["actual"], frame[column], title=f"{who}, {split}")
        for who, column in sides
        if column in frame.columns
    ]
    shown = "every row" if len(frame) <= 2000 else "2,000 rows, evenly spaced"
    return Figure(
        "Predicted against true",
        svgs,
        f"One point per {split} row ({shown}); on the dashed line y = x the prediction is "
        "exact, above it too high. "
        + ("Candidate left, champion right." if len(svgs) > 1 else "No champion yet."),
        "predicted",
    )


def _drift(drift: DriftReport | None, order: list[str]) -> Figure | None:
    if drift is None or not drift.columns:
        return None
    columns = [c for c in order if c in drift.columns]
    scores = [drift.columns[c].score for c in columns]
    thresholds = {drift.columns[c].threshold for c in columns}
    methods = sorted({drift.columns[c].method for c in columns})
    one = len(thresholds) == 1
    svg = plots.bar_chart(
        columns,
        {"score": scores},
        title="Drift score per column",
        ylabel="score",
        hline=next(iter(thresholds)) if one else None,
        hline_label="threshold" if one else None,
        marked=[drift.columns[c].drifted for c in columns],
        marked_label="drifted",
    )
    return Figure(
        "Drift",
        [svg],
        f"Evidently's score per column ({', '.join(methods)}), most drifted first; shaded: "
        "drifted. For a p-value, drift is a score below the threshold; for a distance, above.",
        "drift",
    )


def figures(
    comparison: Comparison,
    drift: DriftReport | None,
    drift_order: list[str],
    split: str,
    classes: list[str],
    level: str,
    task: str = registry.DEFAULT_TASK,
    eval_dir: Path = EVAL_DIR,
) -> list[Figure]:
    """Every figure the data allows, in the page's order."""
    found = [
        _forest(comparison, split, task, level),
        _calibration(eval_dir, list(comparison.splits)),
        _predicted(eval_dir, split)
        if task == "regression"
        else _confusion(eval_dir, split, classes),
        _drift(drift, drift_order),
    ]
    return [f for f in found if f is not None]
