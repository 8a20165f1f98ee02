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
from closedloop.models.persist import load_model, predict_proba
from closedloop.numerics import pin
from closedloop.paths import CANDIDATE_DIR, CHAMPION_ENTRY, EVAL_DIR, SNAPSHOT_DIR

DIGITS = 6  # metrics are rounded so reports read well; CPU runs are bit-identical anyway


def score(
    probs: torch.Tensor,
    target: torch.Tensor,
    classes: list[str],
    cfg: dict,
    task: str = registry.DEFAULT_TASK,
) -> dict:
    """The task's metrics (closedloop.metrics), per-class precision and recall, and the
    confusion matrix. ``cfg`` is params `metrics` (ece_bins...)."""
    k = len(classes)
    r = lambda t: round(float(t), DIGITS)  # noqa: E731
    if len(target) == 0:
        return {"n": 0}
    precision = MulticlassPrecision(k, average=None, zero_division=0)(probs, target)
    recall = MulticlassRecall(k, average=None, zero_division=0)(probs, target)
    support = torch.bincount(target, minlength=k)
    return {
        "n": len(target),
        **{m.name: r(m.score(probs, target, cfg)) for m in registry.task_metrics(task)},
        "per_class": {
            c: {"precision": r(precision[i]), "recall": r(recall[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": MulticlassConfusionMatrix(k)(probs, target).tolist(),
    }


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


def predictions_frame(df: pd.DataFrame, probs: torch.Tensor, config: dict) -> pd.DataFrame:
    """One row per example: what it was, what the model said and how sure it was."""
    classes = config["classes"]
    p = probs.numpy()
    out = pd.DataFrame({"row": np.arange(len(df))})
    if config.get("time_column"):
        out[config["time_column"]] = pd.to_datetime(df[config["time_column"]]).dt.strftime(
            "%Y-%m-%d"
        )
    out["actual"] = df[config["target"]].astype(str).to_numpy()
    out["predicted"] = [classes[i] for i in p.argmax(1)]
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


def champion_predictions(champion, df: pd.DataFrame) -> list[str]:
    """The champion's predicted class for every row, on the columns it was trained on."""
    model, config, entry = champion
    missing = [f for f in config["features"] if f not in df.columns]
    if missing:
        raise DataError(
            f"champion {entry.version}: feature(s) {missing} are not in the snapshot; "
            "it cannot be compared on the same inputs"
        )
    x = df[config["features"]].to_numpy(dtype=np.float32)
    probs = predict_proba(model, x).numpy()
    return [config["classes"][i] for i in probs.argmax(1)]


def evaluate(
    params: dict,
    snapshot: Path = SNAPSHOT_DIR,
    model_dir: Path = CANDIDATE_DIR,
    champion_entry: Path = CHAMPION_ENTRY,
) -> Metrics:
    """Score the candidate, and the champion on the same rows, on every split ``metrics.splits``
    names: overall, per slice, with paired statistics on the difference. Writes
    reports/metrics.json, reports/comparison.json and reports/eval/."""
    from closedloop.evaluation.statistics import compare_split

    pin(params.get("numerics"))  # the same probabilities on any x86-64 CPU
    mcfg = params["metrics"]
    model, config = load_model(model_dir, params["allowed_targets"])
    champion = load_champion(params["allowed_targets"], champion_entry)
    schema = read_schema(snapshot).model_copy(
        update={"features": config["features"], "classes": config["classes"]}
    )
    train = read_split("train", snapshot)[schema.target].astype(str)
    baseline_class = str(train.value_counts().sort_index().idxmax())
    metrics: dict = {}
    comparison: dict = {}
    with atomic_dir(EVAL_DIR) as tmp:
        for split in mcfg["splits"]:
            df = read_split(split, snapshot)
            x, y = tensors(df, schema)
            target = torch.from_numpy(y)
            probs = predict_proba(model, x)
            scored = score(probs, target, config["classes"], mcfg)
            write_json(
                tmp / f"confusion_{split}.json",
                {"classes": config["classes"], "matrix": scored.pop("confusion_matrix")},
            )
            # Per-class detail beside the predictions, not in metrics.json: `dvc metrics show`
            # and `dvc exp show` list the headline metrics only.
            write_json(tmp / f"per_class_{split}.json", scored.pop("per_class", None) or {})
            metrics[split] = scored
            frame = predictions_frame(df, probs, config)
            if champion is not None:
                frame["champion_predicted"] = champion_predictions(champion, df)
            slices = slice_columns(
                df, params["slices"], target=schema.target, time_column=schema.time_column
            )
            frame = pd.concat([frame, slices.reset_index(drop=True)], axis=1)
            frame.to_csv(tmp / f"{split}.csv", index=False, lineterminator="\n")
            comparison[split] = compare_split(
                frame, config["classes"], list(slices.columns), mcfg, baseline_class
            )
            calibration = calibration_rows(probs, target, mcfg["calibration_bins"])
            write_text(
                tmp / f"calibration_{split}.csv",
                csv_text(calibration, ["confidence", "accuracy", "count"]),
            )
    entry = None if champion is None else champion[2]
    Comparison(
        champion=None
        if entry is None
        else ComparedChampion(
            version=entry.version, model_hash=entry.model_hash, commit=entry.commit
        ),
        baseline_class=baseline_class,
        splits=comparison,
    ).write()
    result = Metrics.model_validate(metrics)
    result.write()
    return result
