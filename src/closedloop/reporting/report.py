"""Stage `report`: the benchmark report, the body of the pull-request comment.

Reads the gate verdict, the champion-vs-candidate comparison, drift, the snapshot's lineage
and both model cards. Writes reports/benchmark.md (GitHub-flavoured, kept under GitHub's
comment limit by truncating tables with a note) and reports/benchmark.html (the same
content, self-contained). The same inputs always give the same bytes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from closedloop.errors import DataError
from closedloop.io import read_json, write_text
from closedloop.paths import (
    BENCHMARK_HTML,
    BENCHMARK_MD,
    CANDIDATE_DIR,
    CARD_JSON,
    CHAMPION_DIR,
    CHAMPION_ENTRY,
    COMPARISON,
    DRIFT_HTML,
    DRIFT_JSON,
    GATE,
    METRICS,
    SCHEMA,
)

MARKER = "<!-- closedloop-benchmark -->"  # lets a bot find and update its one sticky comment
COMMENT_LIMIT = 65_536  # GitHub's maximum comment body, in characters
BUDGET = COMMENT_LIMIT - 2_000  # headroom for what a workflow may wrap around the body
VERDICT = {"pass": "✅ PASS", "fail": "❌ FAIL", "inconclusive": "⚠️ INCONCLUSIVE"}
STATUS = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️"}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    note: str = ""  # what was left out, when truncated


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # paragraphs that read best after the tables


# ---------------------------------------------------------------------- formatting
def num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def signed(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def ci(low, high) -> str:
    return "n/a" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"


def sig(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def pval(p) -> str:
    return "n/a" if p is None else (f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}")


def short(h: str | None) -> str:
    return f"`{h[:12]}`" if h else "n/a"


# ------------------------------------------------------------------------ sections
def verdict_section(gate: dict, comparison: dict, split: str, n: int | None) -> Section:
    champ = comparison.get("champion")
    versus = (
        f"champion `{champ['version']}` ({short(champ['model_hash'])})"
        if champ
        else "no champion yet"
    )
    failed = [c["name"] for c in gate["checks"] if c.get("status", "pass") != "pass"]
    lines = [
        f"Candidate {short(gate.get('model_hash'))} vs {versus}, judged on the **{split}** split "
        f"({n if n is not None else 'n/a'} examples).",
    ]
    if failed:
        lines.append("Not passing: " + ", ".join(f"`{name}`" for name in failed) + ".")
    return Section(f"closedloop benchmark: {VERDICT.get(gate['verdict'], gate['verdict'])}", lines)


def comparison_section(comparison: dict, metrics: dict, level: str) -> Section:
    rows = []
    for split, comp in comparison["splits"].items():
        for metric, v in comp["overall"].items():
            rows.append(
                [
                    split,
                    metric,
                    num(v.get("champion")),
                    num(v["candidate"]),
                    signed(v.get("delta")),
                    ci(v.get("ci_low"), v.get("ci_high")),
                ]
            )
        ece = metrics.get(split, {}).get("ece")
        if ece is not None:
            rows.append([split, "ece (lower is better)", "n/a", num(ece), "n/a", "n/a"])
    paragraphs = [f"Δ = candidate − champion on the same examples; {level} paired bootstrap CI."]
    tests = []
    for split, comp in comparison["splits"].items():
        mc = comp.get("mcnemar")
        if mc:
            tests.append(
                f"McNemar exact test on {split}: p = {pval(mc['p_value'])} (candidate right where "
                f"the champion was wrong: {mc['b']}; the reverse: {mc['c']})."
            )
    return Section(
        "Champion vs candidate",
        paragraphs,
        [Table(["split", "metric", "champion", "candidate", "Δ", "CI"], rows)],
        tests,
    )


def slices_section(comparison: dict, split: str, max_rows: int) -> Section:
    comp = comparison["splits"].get(split)
    if not comp or not comp.get("slices"):
        return Section("Slices", ["No slices were scored."])
    rows = []
    for name, values in comp["slices"].items():
        for value, s in values.items():
            metric = next((k for k in ("accuracy", "macro_f1") if k in s), None)
            v = s.get(metric, {}) if metric else {}
            p = s.get("p_holm")
            rows.append(
                [
                    name,
                    value,
                    str(s["n"]),
                    num(v.get("champion")),
                    num(v.get("candidate")),
                    signed(v.get("delta")),
                    ci(v.get("ci_low"), v.get("ci_high")),
                    pval(p),
                ]
            )
    return Section(
        "Slices",
        [
            f"Accuracy per slice on the **{split}** split; p is McNemar's, Holm-corrected across slices."
        ],
        [
            truncate(
                Table(
                    ["slice", "value", "n", "champion", "candidate", "Δ", "CI", "p (Holm)"], rows
                ),
                max_rows,
                "slice rows",
                "reports/comparison.json",
            )
        ],
    )


def gates_section(gate: dict) -> Section:
    rows = [
        [
            STATUS.get(c.get("status", "pass" if c["passed"] else "fail"), "?"),
            c["name"],
            fmt(c.get("value")),
            fmt(c.get("threshold")),
            c.get("reason", ""),
        ]
        for c in gate["checks"]
    ]
    return Section(
        "Gates",
        [f"Policy: `{gate.get('policy', 'n/a')}`."],
        [Table(["", "check", "value", "threshold", "reason"], rows)],
    )


def fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, dict)):
        return str(x)
    return str(x)


def drift_section(drift: dict | None, max_rows: int) -> Section:
    if drift is None:
        return Section("Drift", ["No drift report (reports/drift.json is missing)."])
    ref = drift.get("reference", {})
    share = drift.get("drifted_share")
    lines = [
        f"**{drift.get('drifted_count', 'n/a')} of {drift.get('n_columns', 'n/a')} columns drifted** "
        f"(share {num(share, 2)}) between the reference, the {ref.get('source', '?')}'s training data"
        f"{' `' + ref['version'] + '`' if ref.get('version') else ''} ({ref.get('rows', 'n/a')} rows), and the "
        f"production window ({drift.get('current', {}).get('rows', 'n/a')} rows). "
        f"Full report: `{DRIFT_HTML}` in the artefacts."
    ]
    columns = drift.get("columns", {})
    order = drift.get("top_drifted") or sorted(
        columns, key=lambda c: -(columns[c].get("score") or 0)
    )
    order = order + [c for c in sorted(columns) if c not in order]
    rows = [
        [
            c,
            columns[c].get("kind", ""),
            columns[c].get("method", ""),
            sig(columns[c].get("score")),
            num(columns[c].get("threshold")),
            "**yes**" if columns[c].get("drifted") else "no",
        ]
        for c in order
    ]
    return Section(
        "Drift",
        lines,
        [
            truncate(
                Table(["column", "kind", "method", "score", "threshold", "drifted"], rows),
                max_rows,
                "columns",
                str(DRIFT_JSON),
            )
        ],
    )


def lineage_section(schema: dict, card: dict, champion_card: dict | None) -> Section:
    rows = [
        [
            "data hash",
            short(champion_card.get("data_hash")) if champion_card else "n/a",
            short(schema.get("data_hash")),
        ]
    ]
    splits = schema.get("splits", {})
    for split in sorted(splits, key=lambda k: (k != "train", k != "val", k)):
        rows.append([f"{split} rows", "", str(splits[split]["rows"])])
    lines = []
    if champion_card:
        added = card.get("train_rows", 0) - champion_card.get("train_rows", 0)
        changed = (
            "changed" if champion_card.get("data_hash") != schema.get("data_hash") else "unchanged"
        )
        lines.append(
            f"Training rows added since the champion: **{added:+d}**; data hash {changed}."
        )
        rows[1][1] = str(champion_card.get("train_rows", "n/a"))
    else:
        lines.append("No champion yet: this would be the first production model.")
    feedback = schema.get("feedback_files") or []
    lines.append(f"Feedback partitions in `data/`: {len(feedback)}.")
    return Section("Data lineage", lines, [Table(["", "champion", "candidate"], rows)])


def cost_section(card: dict, champion_card: dict | None) -> Section:
    def row(label, c):
        return [
            label,
            f"{c.get('parameters', 0):,}",
            str(c.get("epochs", "")),
            f"{c.get('steps', 0):,}",
            f"{c.get('device', '')} × {c.get('world_size', 1)}",
        ]

    rows = [row("candidate", card)] + ([row("champion", champion_card)] if champion_card else [])
    return Section(
        "Training cost", [], [Table(["model", "parameters", "epochs", "steps", "devices"], rows)]
    )


def truncate(table: Table, max_rows: int, what: str, where: str) -> Table:
    if len(table.rows) <= max_rows:
        return table
    left = len(table.rows) - max_rows
    return Table(
        table.headers, table.rows[:max_rows], f"… {left} more {what} truncated; see `{where}`."
    )


# ------------------------------------------------------------------------ rendering
def to_markdown(sections: list[Section]) -> str:
    out = [MARKER]
    for i, sec in enumerate(sections):
        out.append(f"{'##' if i == 0 else '###'} {sec.title}\n")
        out += [p + "\n" for p in sec.paragraphs]
        for t in sec.tables:
            cells = lambda r: "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"  # noqa: E731
            out.append(cells(t.headers))
            out.append("|" + "---|" * len(t.headers))
            out += [cells(r) for r in t.rows]
            out.append(f"\n_{t.note}_\n" if t.note else "")
        out += [p + "\n" for p in sec.after]
    out.append(
        "<sub>Generated by `dvc repro` (stage `report`). Full details: `reports/` artefacts.</sub>"
    )
    return "\n".join(out) + "\n"


def to_html(sections: list[Section]) -> str:
    def inline(text: str) -> str:
        import re

        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    body = []
    for i, sec in enumerate(sections):
        body.append(f"<h{2 if i == 0 else 3}>{inline(sec.title)}</h{2 if i == 0 else 3}>")
        body += [f"<p>{inline(p)}</p>" for p in sec.paragraphs]
        for t in sec.tables:
            body.append(
                "<table><thead><tr>"
                + "".join(f"<th>{inline(h)}</th>" for h in t.headers)
                + "</tr></thead><tbody>"
            )
            body += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in t.rows]
            body.append(
                "</tbody></table>" + (f"<p><em>{inline(t.note)}</em></p>" if t.note else "")
            )
        body += [f"<p>{inline(p)}</p>" for p in sec.after]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;"
        "padding:.25rem .5rem;text-align:left}th{background:#f4f4f4}code{background:#f4f4f4}"
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>closedloop benchmark</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _optional(path: Path) -> dict | None:
    return read_json(path) if Path(path).exists() else None


def _required(path: Path) -> dict:
    if not Path(path).exists():
        raise DataError(f"{path}: missing; run `dvc repro` to produce it")
    return read_json(path)


def build(level: str = "95%", max_rows: int = 60) -> tuple[list[Section], list[Section]]:
    """Sections for the comment (rows capped) and for the HTML (everything)."""
    gate = _required(GATE)
    comparison = _required(COMPARISON)
    metrics = _required(METRICS)
    schema = _required(SCHEMA)
    card = _required(CANDIDATE_DIR / CARD_JSON)
    drift = _optional(DRIFT_JSON)
    entry = _optional(CHAMPION_ENTRY) or {}
    champion_card = _optional(CHAMPION_DIR / CARD_JSON) if entry.get("present") else None
    split = gate.get("split", "production")
    n = metrics.get(split, {}).get("n")

    def sections(rows: int) -> list[Section]:
        return [
            verdict_section(gate, comparison, split, n),
            comparison_section(comparison, metrics, level),
            slices_section(comparison, split, rows),
            gates_section(gate),
            drift_section(drift, rows),
            lineage_section(schema, card, champion_card),
            cost_section(card, champion_card),
        ]

    return sections(max_rows), sections(10**9)


def render(level: str = "95%") -> tuple[str, str]:
    """The comment body, shrunk until it fits GitHub's limit, and the full HTML."""
    rows = 60
    comment_sections, full = build(level, rows)
    md = to_markdown(comment_sections)
    while len(md) > BUDGET and rows > 1:
        rows //= 2
        md = to_markdown(build(level, rows)[0])
    if len(md) > BUDGET:
        md = (
            md[:BUDGET]
            + "\n\n_… truncated to fit a GitHub comment; see `reports/benchmark.html`._\n"
        )
    return md, to_html(full)


def write_report(level: str = "95%") -> str:
    """The report stage: render and write benchmark.md and benchmark.html; return the comment."""
    md, page = render(level)
    write_text(BENCHMARK_MD, md)
    write_text(BENCHMARK_HTML, page)
    return md
