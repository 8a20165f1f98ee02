"""Stage `evaluate`: score the candidate, and the champion on the same inputs, on the frozen
eval set and the production window.

Reads params `metrics`, `slices` and `allowed_targets`, the snapshot, models/candidate/ and
models/champion/. Writes reports/metrics.json (the candidate's torchmetrics scores: what
`dvc metrics diff` compares), reports/comparison.json (champion vs candidate overall and per slice, with paired
bootstrap CIs and McNemar tests) and reports/eval/: per-example predictions with the
champion's and the slice labels, a confusion matrix and a calibration curve per split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassPrecision,
    MulticlassRecall,
)

from closedloop import metrics as registry
from closedloop.artefacts.champion import ChampionEntry
from closedloop.artefacts.evaluation import ComparedChampion, Comparison, Metrics
from closedloop.data.snapshot import read_schema, read_split, tensors
from closedloop.errors import DataError
from closedloop.evaluation.slices import slice_columns
from closedloop.io import atomic_dir, csv_text, write_json, write_text
from closedloop.models.encoding import Encoding
from closedloop.models.persist import load_model, predict_proba, predict_values
from closedloop.numerics import pin
from closedloop.paths import CANDIDATE_DIR, CHAMPION_ENTRY, EVAL_DIR, SNAPSHOT_DIR

DIGITS = 6  # metrics are rounded so reports read well; CPU runs are bit-identical anyway


def predicted_labels(probs: torch.Tensor, task: str, threshold: float) -> torch.Tensor:
    """Class indices: the most probable class, or for binary the positive one (index 1) when
    its probability reaches ``metrics.threshold``."""
    if task == "binary":
        return (probs[:, 1] >= threshold).long()
    return probs.argmax(1)


def score(
    probs: torch.Tensor,
    target: torch.Tensor,
    classes: list[str],
    cfg: dict,
    task: str = registry.DEFAULT_TASK,
) -> dict:
    """The task's metrics (closedloop.metrics); for classification also per-class precision
    and recall and the confusion matrix (binary: at ``metrics.threshold``). ``cfg`` is params
    `metrics` (ece_bins, threshold...). For regression ``probs`` holds the predicted values."""
    r = lambda t: round(float(t), DIGITS)  # noqa: E731
    if len(target) == 0:
        return {"n": 0}
    if task == "regression":
        return {
            "n": len(target),
            **{m.name: r(m.score(probs, target, cfg)) for m in registry.task_metrics(task)},
        }
    k = len(classes)
    said = predicted_labels(probs, task, cfg["threshold"])
    precision = MulticlassPrecision(k, average=None, zero_division=0)(said, target)
    recall = MulticlassRecall(k, average=None, zero_division=0)(said, target)
    support = torch.bincount(target, minlength=k)
    return {
        "n": len(target),
        **{m.name: r(m.score(probs, target, cfg)) for m in registry.task_metrics(task)},
        "per_class": {
            c: {"precision": r(precision[i]), "recall": r(recall[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": MulticlassConfusionMatrix(k)(said, target).tolist(),
    }


def confusion_csv(matrix: list[list[int]], classes: list[str]) -> str:
    """Every (actual, predicted) pair with its count, zeros included, for `dvc plots`: the
    matrix stays square even for a class the model never predicts."""
    rows = [
        {"actual": a, "predicted": p, "count": matrix[i][j]}
        for i, a in enumerate(classes)
        for j, p in enumerate(classes)
    ]
    return csv_text(rows, ["actual", "predicted", "count"])


def calibration_rows(probs: torch.Tensor, target: torch.Tensor, bins: int) -> list[dict]:
    """Reliability diagram points: mean confidence against accuracy per confidence bin."""
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for i in range(bins):
        upper = conf <= edges[i + 1] if i == bins - 1 else conf < edges[i + 1]
        mask = (conf >= edges[i]) & upper
        if mask.any():
            rows.append(
                {
                    "confidence": round(float(conf[mask].mean()), DIGITS),
                    "accuracy": round(float((pred[mask] == target[mask]).float().mean()), DIGITS),
                    "count": int(mask.sum()),
                }
            )
    return rows


def predictions_frame(
    df: pd.DataFrame, probs: torch.Tensor, config: dict, threshold: float = 0.5
) -> pd.DataFrame:
    """One row per example: what it was, what the model said and how sure it was (for
    regression: the value, and the residual predicted - actual)."""
    classes = config["classes"]
    task = config.get("task", registry.DEFAULT_TASK)
    p = probs.numpy()
    out = pd.DataFrame({"row": np.arange(len(df))})
    if config.get("time_column"):
        out[config["time_column"]] = pd.to_datetime(df[config["time_column"]]).dt.strftime(
            "%Y-%m-%d"
        )
    if task == "regression":
        actual = df[config["target"]].to_numpy(dtype=float)
        out["actual"] = actual
        out["predicted"] = p.astype(float).round(DIGITS)
        out["residual"] = (out["predicted"] - actual).round(DIGITS)
        return out
    out["actual"] = df[config["target"]].astype(str).to_numpy()
    out["predicted"] = [classes[i] for i in predicted_labels(probs, task, threshold).numpy()]
    out["confidence"] = p.max(1).round(DIGITS)
    for i, c in enumerate(classes):
        out[f"p_{c}"] = p[:, i].round(DIGITS)
    return out


def load_champion(allowed: Sequence[str], entry_path: Path = CHAMPION_ENTRY):
    """The resolved champion (model, config, entry), or None before the first promotion."""
    entry = ChampionEntry.read(entry_path)
    if entry is None:
        return None
    model, config = load_model(Path(entry_path).parent, allowed)
    return model, config, entry


def champion_scores(
    champion, df: pd.DataFrame, target: str, cfg: dict, task: str
) -> dict[str, float]:
    """The metrics that need probabilities and have no paired bootstrap (ECE) for the champion
    on the same rows. A label outside the champion's classes is coded as a class it did not
    predict, so the row counts as wrong, as it is."""
    model, config, _ = champion
    probs = predict_proba(model, df[config["features"]].to_numpy(dtype=np.float32))
    index = {c: i for i, c in enumerate(config["classes"])}
    pred, k = probs.argmax(1), len(config["classes"])
    labels = df[target].astype(str)
    codes = torch.tensor(
        [index.get(a, (int(p) + 1) % k) for a, p in zip(labels, pred, strict=True)]
    )
    return {
        m.name: round(float(m.score(probs, codes, cfg)), DIGITS)
        for m in registry.task_metrics(task)
        if not m.comparable
    }


def champion_predictions(champion, df: pd.DataFrame, task: str, threshold: float) -> dict:
    """The champion's columns of the eval table for every row, on the columns it was trained
    on: ``champion_predicted`` (a class, or a value), and for binary ``champion_score``."""
    model, config, entry = champion
    missing = [f for f in config["features"] if f not in df.columns]
    if missing:
        raise DataError(
            f"champion {entry.version}: feature(s) {missing} are not in the snapshot; "
            "it cannot be compared on the same inputs"
        )
    if config["task"] != task:
        raise DataError(
            f"champion {entry.version}: a {config['task']} model cannot be compared with a "
            f"{task} candidate"
        )
    x, _ = Encoding.from_config(config).transform(df)  # the champion's own encoding
    if task == "regression":
        return {"champion_predicted": predict_values(model, x).numpy().astype(float).round(DIGITS)}
    probs = predict_proba(model, x)
    said = predicted_labels(probs, task, threshold).numpy()
    out = {"champion_predicted": [config["classes"][i] for i in said]}
    if task == "binary":
        out["champion_score"] = probs[:, 1].numpy().round(DIGITS)
    return out


def evaluate(
    params: dict,
    snapshot: Path = SNAPSHOT_DIR,
    model_dir: Path = CANDIDATE_DIR,
    champion_entry: Path = CHAMPION_ENTRY,
) -> Metrics:
    """Score the candidate, and the champion on the same rows, on every split ``metrics.splits``
    names: overall, per slice, with paired statistics on the difference. Writes
    reports/metrics.json, reports/comparison.json and reports/eval/."""
    from closedloop.evaluation.baselines import compare_baselines, persistence_labels
    from closedloop.evaluation.statistics import compare_split

    pin(params.get("numerics"))  # the same probabilities on any x86-64 CPU
    mcfg = params["metrics"]
    model, config = load_model(model_dir, params["allowed_targets"])
    champion = load_champion(params["allowed_targets"], champion_entry)
    schema = read_schema(snapshot).model_copy(
        update={"features": config["features"], "classes": config["classes"]}
    )
    encoding = Encoding.from_config(config)
    task, threshold = config["task"], mcfg["threshold"]
    train = read_split("train", snapshot)[schema.target]
    # The task's dummy: the most frequent training class, or the mean training target.
    if task == "regression":
        baseline_class, baseline_value = None, round(float(train.astype(float).mean()), DIGITS)
        baseline = baseline_value
    else:
        baseline_class = str(train.astype(str).value_counts().sort_index().idxmax())
        baseline_value, baseline = None, baseline_class
    metrics: dict = {}
    comparison: dict = {}
    order = [s for s in ("train", "val", "production") if s in schema.splits]
    with atomic_dir(EVAL_DIR) as tmp:
        for split in mcfg["splits"]:
            df = read_split(split, snapshot)
            persistence = None
            if schema.time_column:
                earlier = [read_split(s, snapshot) for s in order[: order.index(split)]]
                persistence = persistence_labels(df, earlier, schema.target, schema.time_column)
            x, y = tensors(df, schema, encoding)
            target = torch.from_numpy(y)
            if task == "regression":
                outputs, target = predict_values(model, x), target[:, 0]
            else:
                outputs, target = predict_proba(model, x), target.reshape(-1).long()
            scored = score(outputs, target, config["classes"], mcfg, task)
            if "confusion_matrix" in scored:
                matrix = scored.pop("confusion_matrix")
                write_json(
                    tmp / f"confusion_{split}.json",
                    {"classes": config["classes"], "matrix": matrix},
                )
                write_text(tmp / f"confusion_{split}.csv", confusion_csv(matrix, config["classes"]))
            # Per-class detail beside the predictions, not in metrics.json: `dvc metrics show`
            # and `dvc exp show` list the headline metrics only.
            write_json(tmp / f"per_class_{split}.json", scored.pop("per_class", None) or {})
            metrics[split] = scored
            frame = predictions_frame(df, outputs, config, threshold)
            if champion is not None:
                for column, values in champion_predictions(champion, df, task, threshold).items():
                    frame[column] = values
            slices = slice_columns(
                df,
                params["slices"],
                target=schema.target,
                time_column=schema.time_column,
                encoding=encoding,
            )
            frame = pd.concat([frame, slices.reset_index(drop=True)], axis=1)
            frame.to_csv(tmp / f"{split}.csv", index=False, lineterminator="\n")
            compared = compare_split(
                frame, config["classes"], list(slices.columns), mcfg, baseline, task
            )
            if champion is not None and task != "regression" and len(df):
                # ECE needs probabilities, so it has no paired bootstrap: both sides, no CI
                for name, value in champion_scores(champion, df, schema.target, mcfg, task).items():
                    if name in scored:
                        compared["overall"][name] = {
                            "candidate": scored[name],
                            "champion": value,
                            "delta": round(scored[name] - value, DIGITS),
                            "ci_low": None,
                            "ci_high": None,
                        }
            compared["baselines"] = compare_baselines(
                frame, config["classes"], baseline, persistence, mcfg, task
            )
            comparison[split] = compared
            if task != "regression":
                calibration = calibration_rows(outputs, target, mcfg["calibration_bins"])
                write_text(
                    tmp / f"calibration_{split}.csv",
                    csv_text(calibration, ["confidence", "accuracy", "count"]),
                )
        if task != "regression":  # the y = x line of `dvc plots`' calibration plot
            write_text(
                tmp / "calibration_perfect.csv",
                csv_text(
                    [{"confidence": 0.0, "accuracy": 0.0}, {"confidence": 1.0, "accuracy": 1.0}],
                    ["confidence", "accuracy"],
                ),
            )
    entry = None if champion is None else champion[2]
    Comparison(
        champion=None
        if entry is None
        else ComparedChampion(
            version=entry.version, model_hash=entry.model_hash, commit=entry.commit
        ),
        task=task,
        baseline_class=baseline_class,
        baseline_value=baseline_value,
        splits=comparison,
    ).write()
    result = Metrics.model_validate(metrics)
    result.write()
    return result
