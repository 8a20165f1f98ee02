"""Alert rules (``monitor.rules``) checked on the latest window that can judge each one.

A rule names a metric and a limit (``below`` or ``above``). Realised accuracy is judged on its
Wilson interval: it fails only when the whole interval is on the wrong side, so a small window
of bad luck does not open an issue. Each result carries the issue's title and body; monitor.yml
opens or updates ONE issue per failing rule (found by the marker in its body) and closes the
issue of a rule that passes again.
"""

from __future__ import annotations

from closedloop.monitoring.windows import MonitorReport, WindowStats

MARKER = "<!-- closedloop-monitor:{name} -->"
LABEL = "closedloop-monitor"
UNITS = {
    "estimated_accuracy": "estimated accuracy",
    "realised_accuracy": "realised accuracy",
    "drift_share": "drifted share of features",
    "error_rate": "error rate",
    "latency_p99_ms": "p99 latency (ms)",
    "feedback_rate": "feedback rate",
}


def _judgeable(w: WindowStats, metric: str) -> bool:
    if metric == "realised_accuracy":
        return not w.labels_too_few and w.realised_accuracy is not None
    return not w.too_small and getattr(w, metric) is not None


def _value(w: WindowStats, metric: str, below: bool) -> float:
    """The number compared with the limit: for realised accuracy, the Wilson bound nearest it."""
    if metric == "realised_accuracy":
        return w.realised_high if below else w.realised_low
    return getattr(w, metric)


def evaluate(report: MonitorReport, rules: list[dict]) -> list[dict]:
    """One result per rule: failing or not, the numbers, and the issue's title and body."""
    out = []
    for rule in rules:
        metric, below = rule["metric"], "below" in rule
        limit = rule["below"] if below else rule["above"]
        usable = [w for w in report.windows if _judgeable(w, metric)]
        result = {"rule": rule["name"], "metric": metric, "limit": limit,
                  "op": "below" if below else "above", "marker": MARKER.format(name=rule["name"]),
                  "label": LABEL}  # fmt: skip
        if not usable:
            out.append({**result, "failing": False, "window": None, "value": None,
                        "title": "", "body": "", "summary": f"{rule['name']}: no window can judge {UNITS[metric]} yet"})  # fmt: skip
            continue
        latest = usable[-1]
        value = _value(latest, metric, below)
        failing = value < limit if below else value > limit
        side = "below" if below else "above"
        what = UNITS[metric] + (" (Wilson bound)" if metric == "realised_accuracy" else "")
        summary = (
            f"{rule['name']}: {what} {value:.4g} in {latest.label} is "
            f"{'' if failing else 'not '}{side} the limit {limit:g}"
        )
        out.append(
            {
                **result,
                "failing": failing,
                "window": latest.label,
                "value": value,
                "summary": summary,
                "title": f"[closedloop monitor] {rule['name']}: {UNITS[metric]} {side} {limit:g}",
                "body": _body(report, rule, metric, usable, value, limit, side, failing),
            }
        )
    return out


def _body(report, rule, metric, usable, value, limit, side, failing) -> str:
    lines = [
        MARKER.format(name=rule["name"]),
        f"**{UNITS[metric]}** was {value:.4g} in the window {usable[-1].label} "
        f"({report.window}), {side if failing else 'not ' + side} the limit of {limit:g} "
        f"set by rule `{rule['name']}` in conf/monitor/.",
        "",
    ]
    if metric == "realised_accuracy":
        lines += [
            "Realised accuracy is judged on its Wilson interval "
            f"({report.confidence_level:.0%}): the alert fires only when the whole interval "
            "is on the wrong side of the limit.",
            "",
        ]
    if metric == "estimated_accuracy" and not report.estimate.reliable:
        lines += [f"Note: the estimate is flagged unreliable: {report.estimate.note}.", ""]
    lines += [f"| window | requests | {UNITS[metric]} |", "| --- | ---: | ---: |"]
    for w in usable[-8:]:
        shown = getattr(w, metric)
        if metric == "realised_accuracy":
            cell = f"{shown:.4f} [{w.realised_low:.4f}, {w.realised_high:.4f}]"
        else:
            cell = f"{shown:.4g}"
        lines.append(f"| {w.label} | {w.requests} | {cell} |")
    lines += [
        "",
        "The monitoring page (reports/monitor.html, in this run's artefacts) has every window.",
        "This issue is updated in place while the rule fails and closed when it passes.",
    ]
    return "\n".join(lines) + "\n"
