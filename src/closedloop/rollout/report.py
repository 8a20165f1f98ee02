"""reports/rollout.json and reports/rollout.md: the decision, as data and as the PR body."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from closedloop.io import write_json, write_text
from closedloop.paths import ROLLOUT_JSON, ROLLOUT_MD
from closedloop.rollout.decide import NAMES, RolloutReport

MARKER = "<!-- closedloop-rollout -->"
HEADLINE = {
    "pass": "✅ PASS: ramp",
    "fail": "❌ FAIL: roll back",
    "inconclusive": "⚠️ INCONCLUSIVE: hold",
    "invalid": "⛔ INVALID: hold",
    None: "No rollout",
}
STATUS = {
    "harm": "❌ harm",
    "safe": "✅ within margin",
    "unclear": "⚠️ unclear",
    "too_few": "… too few",
}

TEMPLATE = """{{ marker }}
## Rollout: {{ headline }}

{{ r.reason }}

{% if r.mode != "off" -%}
{% if r.mode == "canary" -%}
The candidate answers {{ pct(r.share) }} of requests (a canary). {% else -%}
The candidate runs in shadow on the champion's requests; it answers none. {% endif -%}
This step has {{ exposure }} over {{ "%.1f"|format(r.window.hours) }} hours
{%- if r.window.first %} ({{ r.window.first[:16] }} to {{ r.window.last[:16] }} UTC){% endif %}; a pass needs
{{ r.min_requests }} requests per arm and {{ "%g"|format(r.min_hours) }} hours.
{% if r.srm %}The arm counts {% if r.srm.passed %}match{% else %}do **not** match{% endif %} the declared share
({{ r.srm.candidate }} of {{ r.srm.candidate + r.srm.champion }} to the candidate, expected {{ pct(r.srm.expected_share) }}
{%- if r.srm.p_value is not none %}; chi-square p = {{ "%.3g"|format(r.srm.p_value) }}{% endif %}).
{% endif %}
{% if r.guardrails -%}
| guardrail | champion | candidate | harm | always-valid bounds | p (harm, Holm) | p (within margin) | verdict |
| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |
{% for g in r.guardrails -%}
| {{ names[g.metric] }} (margin {{ "%g"|format(g.margin) }}) | {{ value(g, g.champion) }} | {{ value(g, g.candidate) }} | {{ signed(g.harm) }} | {{ bounds(g) }} | {{ p(g.p_harm_holm) }} | {{ p(g.p_safe) }} | {{ status[g.status] }} |
{% endfor %}
{% for g in r.guardrails -%}
- {{ g.reason }}.{% if g.discordant %} Discordant labelled pairs: champion right and candidate wrong {{ g.discordant.b }}, the reverse {{ g.discordant.c }}.{% endif %}
{% endfor %}
{% endif -%}
Harm is the candidate's shortfall against the champion in the metric's units (for p99 latency:
the share of candidate requests slower than (1 + margin) x the champion's p99, minus the 1% a
p99 allows). The tests are always valid (Howard et al. 2021, Waudby-Smith et al. 2024): checking
every hour does not inflate false alarms. Harm fails the step at alpha = {{ r.alpha }} after Holm's
correction; a pass needs every guardrail shown within its margin.
{% endif %}
**Next step:** {{ next_step }}
"""


def _pct(x: float) -> str:
    return f"{x:.0%}" if x * 100 == round(x * 100) else f"{x:.1%}"


def _value(g, x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f} ms" if g.metric == "latency_p99" else f"{x:.4f}"


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _bounds(g) -> str:
    if g.harm_low is None:
        return "n/a"
    return f"[{g.harm_low:+.4f}, {g.harm_high:+.4f}]"


def _p(x: float) -> str:
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def _next(r: RolloutReport) -> str:
    if r.action == "ramp":
        return f"set `mode: {r.next_mode}` and `share: {r.next_share:g}` in conf/rollout/."
    if r.action == "rollback":
        return "set `mode: off` in conf/rollout/: the champion answers everything again."
    if r.action == "complete":
        return "promote the candidate through the registry, then set `mode: off`."
    if r.action == "hold":
        return (
            "none: the rollout stays where it is until the evidence is clear or a person decides."
        )
    return "none."


def markdown(r: RolloutReport) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    if r.mode == "canary":
        e = r.exposure
        exposure = (
            f"{e['champion']} champion and {e['candidate']} candidate requests "
            f"({e['labelled_champion']} and {e['labelled_candidate']} labelled)"
        )
    elif r.mode == "shadow":
        e = r.exposure
        exposure = f"{e['paired']} paired requests ({e['labelled_paired']} labelled)"
    else:
        exposure = ""
    return env.from_string(TEMPLATE).render(
        marker=MARKER,
        headline=HEADLINE[r.outcome],
        r=r,
        exposure=exposure,
        names=NAMES,
        status=STATUS,
        pct=_pct,
        value=_value,
        signed=_signed,
        bounds=_bounds,
        p=_p,
        next_step=_next(r),
    )


def write(r: RolloutReport, js: Path = ROLLOUT_JSON, md: Path = ROLLOUT_MD) -> None:
    """Both files, atomically; the JSON with sorted keys, so the same decision is the same bytes."""
    write_json(js, json.loads(r.model_dump_json()))
    write_text(md, markdown(r))
