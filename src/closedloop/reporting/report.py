"""Stage `report`: the benchmark report, the body of the pull-request comment.

Reads the gate verdict, the champion-vs-candidate comparison (with the baselines), drift, the
snapshot's lineage, both model cards and reports/eval/ (for the page's plots). Writes reports/benchmark.md (GitHub-flavoured, kept under GitHub's
comment limit by truncating tables with a note) and reports/benchmark.html (every row, one
self-contained page, with inline SVG plots: closedloop.reporting.figures). Both come from the Jinja2 templates benchmark.md.j2 and
benchmark.html.j2 (closedloop.templating: a copy in the repository's templates/ overrides
them). The same inputs always give the same bytes.
"""

from __future__ import annotations

from closedloop import metrics as registry
from closedloop import templating
from closedloop.artefacts.card import ModelCard
from closedloop.artefacts.champion import ChampionEntry
from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison, Metrics
from closedloop.artefacts.gate import GateReport
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.io import write_text
from closedloop.paths import BENCHMARK_HTML, BENCHMARK_MD, CARD_JSON, CHAMPION_DIR

MARKER = "<!-- closedloop-benchmark -->"  # lets a bot find and update its one sticky comment
COMMENT_LIMIT = 65_536  # GitHub's maximum comment body, in characters
BUDGET = COMMENT_LIMIT - 2_000  # headroom for what a workflow may wrap around the body
MAX_ROWS = 60  # rows of a long table in the comment before it is halved to fit


def _delta_row(v, **keys) -> dict:
    """A table row from a comparison entry (MetricDelta), or n/a where there is none."""
    values = ("candidate", "champion", "delta", "ci_low", "ci_high")
    return {**keys, **(dict.fromkeys(values) if v is None else {k: getattr(v, k) for k in values})}


def comparison_rows(comparison: Comparison, metrics: Metrics, task: str) -> list[dict]:
    """Per split, every metric of the task in the registry's order: compared with the champion
    where comparison.json has it, else the candidate's value alone from metrics.json."""
    rows = []
    for split, comp in comparison.splits.items():
        for metric in registry.task_metrics(task):
            if metric.name in comp.overall:
                rows.append(_delta_row(comp.overall[metric.name], split=split, metric=metric))
            elif (scored := metrics.get(split)) and scored.value(metric.name) is not None:
                row = _delta_row(None, split=split, metric=metric)
                rows.append({**row, "candidate": scored.value(metric.name)})
    return rows


def slice_rows(comparison: Comparison, split: str, task: str) -> tuple[registry.Metric, list[dict]]:
    """The first comparable metric of the task, per slice value of the judged split."""
    comp = comparison.splits.get(split)
    slices = comp.slices if comp is not None else {}
    scored = {name for values in slices.values() for s in values.values() for name in s.model_extra}
    metric = next(
        (m for m in registry.task_metrics(task) if m.comparable and m.name in scored),
        registry.task_metrics(task)[0],
    )
    rows = [
        _delta_row(s.metric(metric.name), slice=name, value=value, n=s.n, p_holm=s.p_holm)
        for name, values in slices.items()
        for value, s in values.items()
    ]
    return metric, rows


def drift_order(drift: DriftReport | None) -> list[str]:
    """The most drifted columns first (drift.json's order, else by score), then the rest."""
    if drift is None:
        return []
    columns = drift.columns
    order = drift.top_drifted or sorted(columns, key=lambda c: -columns[c].score)
    return order + [c for c in sorted(columns) if c not in order]


def baseline_rows(comparison: Comparison, split: str, task: str) -> list[dict]:
    """Per baseline and compared metric on the judged split; ``loses``: the candidate's point
    estimate is below the baseline's (the verdict section flags it, gated or not)."""
    comp = comparison.splits.get(split)
    if comp is None:
        return []
    rows = []
    for name, b in comp.baselines.items():
        for metric, e in b.metrics.items():
            m = registry.get(metric, task)
            worse = e.candidate < e.baseline if m.higher_is_better else e.candidate > e.baseline
            rows.append(
                {
                    "baseline": name,
                    "description": b.description,
                    "hindsight": b.hindsight,
                    "metric": m,
                    "candidate": e.candidate,
                    "value": e.baseline,
                    "delta": e.delta,
                    "ci_low": e.ci_low,
                    "ci_high": e.ci_high,
                    "loses": worse,
                    # the whole CI on the losing side: worse beyond what noise explains
                    "confidently": e.ci_high is not None
                    and (e.ci_high < 0 if m.higher_is_better else e.ci_low > 0),
                }
            )
    return rows


def context(level: str) -> dict:
    """What the templates get: the artefacts, typed, and the rows derived from them (the
    metrics of the task comparison.json was measured for)."""
    gate = GateReport.read()
    comparison = Comparison.read()
    task = comparison.task
    metrics = Metrics.read()
    schema = SnapshotSchema.read()
    card = ModelCard.read()
    champion = ChampionEntry.read()
    champion_card = ModelCard.read(CHAMPION_DIR / CARD_JSON) if champion is not None else None
    drift = DriftReport.read_if_present()
    split = gate.split
    metric, slices = slice_rows(comparison, split, task)
    baselines = baseline_rows(comparison, split, task)
    return {
        "gate": gate,
        "task": task,
        "comparison": comparison,
        "metrics": metrics,
        "drift": drift,
        "schema": schema,
        "card": card,
        "champion_card": champion_card,
        "split": split,
        "n": metrics[split].n if split in metrics else None,
        "level": level,
        "not_passing": [c.name for c in gate.checks if c.status != "pass"],
        "comparison_rows": comparison_rows(comparison, metrics, task),
        "slice_metric": metric,
        "slice_rows": slices,
        "drift_order": drift_order(drift),
        "split_order": sorted(schema.splits, key=lambda k: (k != "train", k != "val", k)),
        "rows_added": None if champion_card is None else card.train_rows - champion_card.train_rows,
        "baseline_rows": baselines,
        "baseline_flags": [r for r in baselines if r["loses"]],
        "required_baselines": [
            c.name.split(":")[1] for c in gate.checks if c.name.startswith("beat_baseline:")
        ],
        "figures": [],
    }


def render(level: str = "95%") -> tuple[str, str]:
    """The comment body, its long tables halved until it fits GitHub's limit, and the page."""
    ctx = context(level)
    rows = MAX_ROWS
    md = MARKER + "\n" + templating.render("benchmark.md.j2", max_rows=rows, **ctx)
    while len(md) > BUDGET and rows > 1:
        rows //= 2
        md = MARKER + "\n" + templating.render("benchmark.md.j2", max_rows=rows, **ctx)
    if len(md) > BUDGET:
        md = (
            md[:BUDGET]
            + "\n\n_… truncated to fit a GitHub comment; see `reports/benchmark.html`._\n"
        )
    from closedloop.reporting.figures import figures  # matplotlib: the page only

    ctx["figures"] = figures(
        ctx["comparison"],
        ctx["drift"],
        ctx["drift_order"],
        ctx["split"],
        ctx["schema"].classes,
        level,
        ctx["comparison"].task,
    )
    return md, templating.render("benchmark.html.j2", max_rows=None, **ctx)


def write_report(level: str = "95%") -> str:
    """The report stage: render and write benchmark.md and benchmark.html; return the comment."""
    md, page = render(level)
    write_text(BENCHMARK_MD, md)
    write_text(BENCHMARK_HTML, page)
    return md
