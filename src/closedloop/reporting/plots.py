"""Small SVG plots to inline in self-contained HTML reports (no CDN, no script).

matplotlib draws through its object API (no pyplot state, no GUI backend) and writes SVG
with a fixed hash salt, text kept as text and no date, so the same data always gives the
same bytes. Each function returns one ``<svg>…</svg>`` element, ready to paste into a page.

    line_chart(x, {"estimated": est, "realised": real}, bands={"realised": (lo, hi)})
    bar_chart(x, {"champion": a, "candidate": b}, stacked=True)
    forest_plot(labels, estimates, lows, highs, ref=0.0)
    calibration_plot(confidence, accuracy, counts)
    confusion_plot(matrix, classes)
    scatter_plot(actual, predicted)

Missing values (None or NaN) leave gaps; ``marked`` shades the x positions a reader should
not trust (windows too small to judge) instead of hiding them.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#57606a")
MARKED = "#d0d7de"
RC = {
    "svg.hashsalt": "closedloop",  # clip-path ids from this salt, not a random one
    "svg.fonttype": "none",  # text stays text: smaller, searchable, no embedded glyphs
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#eaeef2",
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
}
Number = float | int | None


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "closedloop"})
    text = buf.getvalue()
    text = text[text.index("<svg") :].strip()  # drop the XML prolog and DOCTYPE to inline it
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)


def _figure(width: float, height: float) -> tuple[Figure, object]:
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _values(seq: Sequence[Number]) -> list[float]:
    return [math.nan if v is None else float(v) for v in seq]


def _categories(ax, labels: Sequence[str]) -> None:
    n = len(labels)
    step = max(1, math.ceil(n / 14))  # at most ~14 tick labels
    ticks = list(range(0, n, step))
    ax.set_xticks(
        ticks,
        [labels[i] for i in ticks],
        rotation=45 if n > 6 else 0,
        ha="right" if n > 6 else "center",
    )
    ax.set_xlim(-0.6, n - 0.4)


def _mark(ax, marked: Sequence[bool] | None, label: str) -> None:
    if not marked:
        return
    first = True
    for i, m in enumerate(marked):
        if m:
            ax.axvspan(
                i - 0.5,
                i + 0.5,
                color=MARKED,
                alpha=0.6,
                lw=0,
                zorder=0,
                label=label if first else None,
            )
            first = False


def _finish(ax, title: str, ylabel: str, percent: bool, ylim) -> None:
    with matplotlib.rc_context(RC):
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if percent:
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def line_chart(
    x: Sequence[str],
    series: Mapping[str, Sequence[Number]],
    *,
    title: str = "",
    ylabel: str = "",
    bands: Mapping[str, tuple[Sequence[Number], Sequence[Number]]] | None = None,
    hline: float | None = None,
    hline_label: str | None = None,
    marked: Sequence[bool] | None = None,
    marked_label: str = "too small to judge",
    percent: bool = False,
    ylim: tuple[float, float] | None = None,
    width: float = 7.5,
    height: float = 2.6,
) -> str:
    """Lines over categorical x (windows), optional shaded bands (CIs) and a limit line."""
    fig, ax = _figure(width, height)
    pos = list(range(len(x)))
    _mark(ax, marked, marked_label)
    with matplotlib.rc_context(RC):
        for i, (name, values) in enumerate(series.items()):
            color = PALETTE[i % len(PALETTE)]
            if bands and name in bands:
                lo, hi = bands[name]
                ax.fill_between(pos, _values(lo), _values(hi), color=color, alpha=0.15, lw=0)
            ax.plot(pos, _values(values), marker="o", ms=3, lw=1.5, color=color, label=name)
        if hline is not None:
            ax.axhline(hline, color="#57606a", lw=1, ls="--", label=hline_label)
    _categories(ax, x)
    _finish(ax, title, ylabel, percent, ylim)
    return _svg(fig)


def bar_chart(
    x: Sequence[str],
    series: Mapping[str, Sequence[Number]],
    *,
    title: str = "",
    ylabel: str = "",
    stacked: bool = True,
    hline: float | None = None,
    hline_label: str | None = None,
    marked: Sequence[bool] | None = None,
    marked_label: str = "too small to judge",
    percent: bool = False,
    ylim: tuple[float, float] | None = None,
    width: float = 7.5,
    height: float = 2.6,
) -> str:
    """Bars per category, stacked (shares, arms) or side by side."""
    fig, ax = _figure(width, height)
    pos = list(range(len(x)))
    _mark(ax, marked, marked_label)
    k = max(1, len(series))
    bottom = [0.0] * len(x)
    with matplotlib.rc_context(RC):
        for i, (name, values) in enumerate(series.items()):
            v = [0.0 if math.isnan(a) else a for a in _values(values)]
            color = PALETTE[i % len(PALETTE)]
            if stacked:
                ax.bar(pos, v, bottom=bottom, width=0.8, color=color, label=name)
                bottom = [b + a for b, a in zip(bottom, v, strict=True)]
            else:
                w = 0.8 / k
                ax.bar([p - 0.4 + w * (i + 0.5) for p in pos], v, width=w, color=color, label=name)
        if hline is not None:
            ax.axhline(hline, color="#57606a", lw=1, ls="--", label=hline_label)
    _categories(ax, x)
    _finish(ax, title, ylabel, percent, ylim)
    return _svg(fig)


def forest_plot(
    labels: Sequence[str],
    estimates: Sequence[Number],
    lows: Sequence[Number],
    highs: Sequence[Number],
    *,
    ref: float | None = 0.0,
    title: str = "",
    xlabel: str = "Δ",
    width: float = 6.0,
) -> str:
    """One row per label: a point estimate and its interval, against a reference line."""
    n = len(labels)
    fig, ax = _figure(width, 0.9 + 0.32 * max(n, 1))
    ys = list(range(n))[::-1]
    est, lo, hi = _values(estimates), _values(lows), _values(highs)
    with matplotlib.rc_context(RC):
        for y, e, a, b in zip(ys, est, lo, hi, strict=True):
            if not (math.isnan(a) or math.isnan(b)):
                ax.plot([a, b], [y, y], color=PALETTE[0], lw=2)
            ax.plot([e], [y], marker="D", ms=5, color=PALETTE[0])
        if ref is not None:
            ax.axvline(ref, color="#57606a", lw=1, ls="--")
        ax.set_yticks(ys, list(labels))
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    return _svg(fig)


def calibration_plot(
    confidence: Sequence[Number],
    accuracy: Sequence[Number],
    counts: Sequence[int] | None = None,
    *,
    title: str = "Calibration",
    label: str = "observed",
    width: float = 3.6,
) -> str:
    """Reliability diagram: accuracy against mean confidence per bin, with the line y = x."""
    fig, ax = _figure(width, width * 0.9)
    with matplotlib.rc_context(RC):
        ax.plot([0, 1], [0, 1], color="#57606a", lw=1, ls="--", label="perfect (y = x)")
        sizes = None if counts is None else [12 + 60 * c / max(max(counts), 1) for c in counts]
        ax.scatter(
            _values(confidence),
            _values(accuracy),
            s=sizes or 20,
            color=PALETTE[0],
            label=label,
            zorder=3,
        )
        ax.plot(_values(confidence), _values(accuracy), color=PALETTE[0], lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        ax.legend(frameon=False, fontsize=8, loc="upper left")
    return _svg(fig)


def confusion_plot(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    *,
    title: str = "Confusion matrix",
    width: float = 4.2,
) -> str:
    """Counts of true (rows) against predicted (columns) classes, annotated."""
    fig, ax = _figure(width, width * 0.9)
    with matplotlib.rc_context(RC):
        k = len(classes)
        ax.pcolormesh(
            [[float(v) for v in row] for row in matrix],
            cmap="Blues",
            edgecolors="white",
            linewidth=0.5,
        )
        ax.set_xlim(0, k)
        ax.set_ylim(k, 0)  # first class on top, as a table reads
        ax.grid(visible=False)
        ax.set_xticks([i + 0.5 for i in range(k)], list(classes), rotation=45, ha="right")
        ax.set_yticks([i + 0.5 for i in range(k)], list(classes))
        top = max((max(r) for r in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > top / 2 else "black",
                )
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    return _svg(fig)


def scatter_plot(
    actual: Sequence[float],
    predicted: Sequence[float],
    *,
    title: str = "Predicted against true",
    width: float = 3.6,
    limit: int = 2000,
) -> str:
    """Predicted (y) against true (x) values, with the line y = x. At most ``limit`` points,
    evenly spaced over the rows: the page stays small and the same rows give the same bytes."""
    step = max(1, math.ceil(len(actual) / limit))
    xs, ys = _values(list(actual)[::step]), _values(list(predicted)[::step])
    fig, ax = _figure(width, width * 0.9)
    with matplotlib.rc_context(RC):
        finite = [v for v in xs + ys if not math.isnan(v)]
        if finite:
            low, high = min(finite), max(finite)
            ax.plot([low, high], [low, high], color="#57606a", lw=1, ls="--", label="exact (y = x)")
        ax.scatter(xs, ys, s=8, color=PALETTE[0], alpha=0.5, linewidths=0, zorder=3)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        if finite:
            ax.legend(frameon=False, fontsize=8, loc="upper left")
    return _svg(fig)


def count_svgs(html: str) -> int:
    """How many inline ``<svg`` elements a page holds (for tests and checks)."""
    return len(re.findall(r"<svg\b", html))
