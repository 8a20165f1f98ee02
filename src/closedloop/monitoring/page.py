"""reports/monitor.html: the monitoring page, self-contained and readable offline.

One file: inline CSS, inline SVG plots (closedloop.reporting.plots), no script, no font, no
request to anywhere. Every number comes from the MonitorReport that monitor.json holds, and the
key ones carry ``data-key`` attributes so a test can read them back from the rendered page.
"""

from __future__ import annotations

import jinja2
from markupsafe import Markup

from closedloop.monitoring.windows import MonitorReport
from closedloop.reporting import plots

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>closedloop monitoring</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
p { line-height: 1.45; } .muted { color: #57606a; } .bad { color: #d1242f; font-weight: 600; } .ok { color: #1a7f37; }
table { border-collapse: collapse; font-size: .85rem; margin: .8rem 0; } th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.small td { background: #f6f8fa; color: #57606a; }
svg { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .8rem; border-radius: 4px; }
</style>
</head>
<body>
<h1>Monitoring</h1>
<p>From {{ r.source }}: <span data-key="requests">{{ r.totals.requests }}</span> predictions in
<span data-key="windows">{{ r.totals.windows }}</span> {{ r.window }} windows{% if r.windows %}, {{ r.windows[0].label }} to {{ r.windows[-1].label }}{% endif %};
<span data-key="labelled">{{ r.totals.labelled }}</span> of them have feedback.
Windows with fewer than {{ r.min_requests }} predictions (or {{ r.min_labels }} labels, for realised accuracy) are shaded: too small to judge, shown anyway.
{% if r.records.skipped or r.records.duplicates %}{{ r.records.skipped }} records without an id or a time and {{ r.records.duplicates }} repeated ids were left out.{% endif %}</p>

<h2>Alerts</h2>
{% if alerts %}<ul>{% for a in alerts %}<li class="{{ 'bad' if a.failing else 'ok' }}" data-rule="{{ a.rule }}" data-failing="{{ 'true' if a.failing else 'false' }}">{{ 'FAILING' if a.failing else 'ok' }}: {{ a.summary }}.</li>{% endfor %}</ul>
{% else %}<p class="muted">No alert rules are declared (conf/monitor/).</p>{% endif %}

<h2>Accuracy: the estimate before labels, and what the labels say</h2>
{% if r.estimate.available %}
<p>The estimate is the mean top probability of each window's predictions, {% if r.estimate.method == "isotonic" %}calibrated on {{ r.estimate.eval_examples }} eval examples ({{ r.estimate.source }}) by isotonic regression{% else %}uncalibrated (no eval outputs){% endif %};
it needs no labels. Realised accuracy is shown with its {{ "%.0f"|format(r.confidence_level * 100) }}% Wilson interval once labels arrive.
Overall: estimated <span data-key="estimated_accuracy">{{ f3(r.totals.estimated_accuracy) }}</span>, realised <span data-key="realised_accuracy">{{ f3(r.totals.realised_accuracy) }}</span>.</p>
<p class="{{ 'note' if not r.estimate.reliable else 'muted' }}">{% if not r.estimate.reliable %}<strong>The estimate is unreliable:</strong> {% endif %}{{ r.estimate.note }}.</p>
{% else %}<p class="note">{{ r.estimate.note }}.</p>{% endif %}
<p class="muted"><strong>Assumption.</strong> {{ r.assumption }}</p>
{{ svg.accuracy }}
{% if svg.calibration %}<div class="grid">{{ svg.calibration }}<p class="muted" style="max-width: 28rem">Calibration of the model on the eval set (reports/eval/): accuracy against mean confidence per bin. Points below the line y = x are overconfident; the estimate maps confidences onto this curve.</p></div>{% endif %}
<table>
<tr><th>window</th><th>predictions</th><th>labelled</th><th>estimated</th><th>realised</th><th>Wilson interval</th><th>gap (est. − real.)</th></tr>
{% for w in r.windows %}<tr class="{{ 'small' if w.labels_too_few or w.too_small else '' }}" data-window="{{ w.label }}"><td>{{ w.label }}{% if w.too_small %} (too small){% elif w.labels_too_few %} (few labels){% endif %}</td><td>{{ w.requests }}</td><td>{{ w.labelled }}</td><td data-key="estimated">{{ f3(w.estimated_accuracy) }}</td><td data-key="realised">{{ f3(w.realised_accuracy) }}</td><td>{% if w.realised_low is not none %}[{{ f3(w.realised_low) }}, {{ f3(w.realised_high) }}]{% else %}n/a{% endif %}</td><td data-key="gap">{{ s3(w.gap) }}</td></tr>
{% endfor %}</table>

<h2>Traffic</h2>
{{ svg.volume }}
{{ svg.latency }}
{% if svg.errors %}{{ svg.errors }}{% else %}<p class="muted">No error column in the records: the server does not log failed requests yet.</p>{% endif %}

<h2>Predictions</h2>
{{ svg.mix }}

<h2>Feedback</h2>
{{ svg.feedback }}
{{ svg.delay }}

<h2>Drift</h2>
{% if svg.drift %}<p>Share of feature columns that drifted in each window against {{ r.drift_reference }} (Evidently's DataDriftPreset, with the settings of params <code>drift</code>). Windows with too few rows get no verdict.</p>
{{ svg.drift }}{% else %}<p class="muted">No drift per window: {{ drift_why }}.</p>{% endif %}

{% if svg.arms %}<h2>Rollout arms</h2>
<p>Requests per arm (conf/rollout/; the decision is reports/rollout.md).</p>
{{ svg.arms }}{% endif %}

<h2>Every window</h2>
<table>
<tr><th>window</th><th>predictions</th><th>p50 ms</th><th>p99 ms</th><th>error rate</th><th>feedback rate</th><th>delay h (median)</th><th>drift share</th></tr>
{% for w in r.windows %}<tr class="{{ 'small' if w.too_small else '' }}"><td>{{ w.label }}</td><td>{{ w.requests }}</td><td>{{ f1(w.latency_p50_ms) }}</td><td>{{ f1(w.latency_p99_ms) }}</td><td>{{ f3(w.error_rate) }}</td><td>{{ f3(w.feedback_rate) }}</td><td>{{ f1(w.feedback_delay_hours) }}</td><td>{{ f3(w.drift_share) }}</td></tr>
{% endfor %}</table>
<p class="muted">Generated by <code>closedloop monitor</code> from the same data as reports/monitor.json.</p>
</body>
</html>
"""


def _f(digits: int):
    return lambda x: "n/a" if x is None else f"{x:.{digits}f}"


def _s3(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def render(r: MonitorReport, drift_why: str = "") -> str:
    """The page's HTML for a report (alerts included when evaluated)."""
    x = [w.label for w in r.windows]
    small = [w.too_small for w in r.windows]
    few = [w.labels_too_few or w.too_small for w in r.windows]
    svg: dict[str, str] = {}
    if r.windows:
        acc = {
            "realised": [w.realised_accuracy for w in r.windows],
            "estimated (label-free)": [w.estimated_accuracy for w in r.windows],
        }
        svg["accuracy"] = plots.line_chart(
            x, acc, title="Accuracy per window", ylabel="accuracy", percent=True, ylim=(0, 1),
            bands={"realised": ([w.realised_low for w in r.windows], [w.realised_high for w in r.windows])},
            marked=few,
        )  # fmt: skip
        arms = r.has_rollout and any(w.arms for w in r.windows)
        volume = (
            {a: [w.arms.get(a, 0) for w in r.windows] for a in ("champion", "candidate")}
            if arms
            else {"predictions": [w.requests for w in r.windows]}
        )
        svg["volume"] = plots.bar_chart(
            x, volume, title="Volume", ylabel="predictions", marked=small
        )
        svg["latency"] = plots.line_chart(
            x, {"p50": [w.latency_p50_ms for w in r.windows], "p99": [w.latency_p99_ms for w in r.windows]},
            title="Latency", ylabel="ms", marked=small,
        )  # fmt: skip
        if r.has_errors:
            svg["errors"] = plots.line_chart(
                x, {"error rate": [w.error_rate for w in r.windows]}, title="Error rate",
                ylabel="share of requests", percent=True, marked=small,
            )  # fmt: skip
        svg["mix"] = plots.bar_chart(
            x, {c: [w.prediction_mix.get(c) for w in r.windows] for c in r.classes},
            title="Prediction mix", ylabel="share of predictions", percent=True, ylim=(0, 1), marked=small,
        )  # fmt: skip
        svg["feedback"] = plots.line_chart(
            x, {"feedback rate": [w.feedback_rate for w in r.windows]}, title="Feedback rate",
            ylabel="share with feedback", percent=True, ylim=(0, 1), marked=small,
        )  # fmt: skip
        svg["delay"] = plots.line_chart(
            x, {"median delay": [w.feedback_delay_hours for w in r.windows]},
            title="Feedback delay", ylabel="hours", marked=small,
        )  # fmt: skip
        if any(w.drift_share is not None for w in r.windows):
            limit = next((a["limit"] for a in r.alerts if a["metric"] == "drift_share"), None)
            svg["drift"] = plots.bar_chart(
                x, {"drifted share": [w.drift_share for w in r.windows]}, title="Drift share",
                ylabel="share of features", percent=True, ylim=(0, 1), hline=limit,
                hline_label=None if limit is None else "alert limit",
                marked=[w.drift_share is None for w in r.windows], marked_label="no verdict (too few rows)",
            )  # fmt: skip
        if arms:
            svg["arms"] = plots.bar_chart(
                x, volume, title="Requests per arm", ylabel="requests", stacked=False
            )
    if r.calibration_curve:
        c = r.calibration_curve
        svg["calibration"] = plots.calibration_plot(
            [p["confidence"] for p in c], [p["accuracy"] for p in c], [int(p["count"]) for p in c],
            title="Calibration on the eval set",
        )  # fmt: skip
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    template = env.from_string(TEMPLATE)
    safe = {k: Markup(v) for k, v in svg.items()}
    return template.render(
        r=r, alerts=r.alerts, svg=safe, drift_why=drift_why, f3=_f(3), f1=_f(1), s3=_s3
    )
