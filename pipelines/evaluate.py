"""Stage `evaluate`: the candidate, and the champion on the same rows, on every scored split.

Reads params `metrics`, `slices`, `allowed_targets` and `code`, the snapshot,
models/candidate/ and models/champion/.
Writes reports/metrics.json (the headline metrics per split: what `dvc metrics show` and
`dvc metrics diff` compare), reports/comparison.json (champion vs candidate with paired
statistics, overall and per slice) and reports/eval/ (per example, per class:
per_class_<split>.json, confusion matrices, calibration bins).
"""

from closedloop.config import load_params
from closedloop.errors import run_stage
from closedloop.evaluation.evaluate import evaluate
from closedloop.paths import METRICS


def main() -> None:
    metrics = evaluate(load_params())
    summary = ", ".join(  # the task's headline metric: the first it declares
        f"{s} {name} {m.value(name):.3f}"
        if m.n and (name := next(iter(m.model_extra)))
        else f"{s} has no rows"
        for s, m in metrics.items()
    )
    print(f"evaluate: {summary} -> {METRICS}")


if __name__ == "__main__":
    run_stage(main, __doc__)
