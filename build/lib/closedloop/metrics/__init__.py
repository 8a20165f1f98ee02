"""The metrics, declared once per task: name, direction, whether champion and candidate are
compared with a paired bootstrap, and how to compute them.

Config validation (the names `metrics.compare` and `conf/gates/` may use), the paired
statistics, the gate (which way is better) and the report (labels, order) all read this
registry. To add a metric, add it to its task's module; to add a task (binary, regression),
add a module declaring its ``METRICS`` and a line to ``TASKS``.

It sits below config in the layers (config validates against it), so it imports torch and
torchmetrics only inside the functions that compute.
"""

from __future__ import annotations

from closedloop.errors import ConfigError
from closedloop.metrics import multiclass
from closedloop.metrics.base import Metric

TASKS: dict[str, tuple[Metric, ...]] = {"multiclass": multiclass.METRICS}
DEFAULT_TASK = "multiclass"  # every dataset today; a dataset's `task` will choose


def task_metrics(task: str = DEFAULT_TASK) -> tuple[Metric, ...]:
    """A task's metrics, in the order reports list them."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r} (choose from: {', '.join(TASKS)})")
    return TASKS[task]


def names(task: str = DEFAULT_TASK, *, comparable: bool | None = None) -> tuple[str, ...]:
    """The metric names of a task; only those compared (or not) with the champion if asked."""
    return tuple(
        m.name for m in task_metrics(task) if comparable is None or m.comparable == comparable
    )


def get(name: str, task: str = DEFAULT_TASK) -> Metric:
    for m in task_metrics(task):
        if m.name == name:
            return m
    raise ConfigError(f"unknown metric {name!r} (choose from: {', '.join(names(task))})")


__all__ = ["DEFAULT_TASK", "TASKS", "Metric", "get", "names", "task_metrics"]
