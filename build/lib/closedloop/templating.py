"""The Jinja2 templates behind everything closedloop writes for people to read.

The defaults ship in src/closedloop/templates/ (the benchmark report and its HTML page,
the error analysis, the promotion and rollback pull-request bodies). A file of the same name in
the repository's templates/ directory replaces the default: copy one there and edit it. The
report and errors stages declare templates/ as a DVC dependency, so an edit reruns them.

Templates get the artefacts they report on as typed objects, and the filters below for
numbers. A template that does not parse, or names something its context lacks, is one
line naming the template file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from closedloop.errors import ConfigError
from closedloop.paths import TEMPLATES

DEFAULTS = Path(__file__).parent / "templates"


# ------------------------------------------------------------------------------ filters
def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def signed(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def ci(low: float | None, high: float | None) -> str:
    """A confidence interval of a delta: ``[-0.012, +0.034]``."""
    return "n/a" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"


def sig(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def pval(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}")


def thousands(n: int) -> str:
    return f"{n:,}"


def percent(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}%}"


def short(digest: str | None) -> str:
    """A hash as code, cut to 12 characters as git does."""
    return f"`{digest[:12]}`" if digest else "n/a"


def fmt(x: Any) -> str:
    """A value of unknown type for a table: nothing for None, 4 significant digits for floats."""
    if x is None:
        return ""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def cell(x: Any) -> str:
    """Text that may go in a Markdown table cell: a '|' would end the cell, a newline the row."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown(text: str) -> str:
    """GitHub-flavoured Markdown (tables included) as HTML, with markdown-it-py. Raw HTML in
    the text is escaped, not passed through: the page stays free of scripts whatever a column
    or slice is called."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


FILTERS = {
    "num": num,
    "signed": signed,
    "sig": sig,
    "pval": pval,
    "short": short,
    "fmt": fmt,
    "thousands": thousands,
    "percent": percent,
    "cell": cell,
    "markdown": markdown,
}


# --------------------------------------------------------------------------- rendering
def environment(overrides: Path = TEMPLATES) -> jinja2.Environment:
    """Templates from ``overrides`` (relative to the repository root) first, then the defaults."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(overrides), jinja2.FileSystemLoader(DEFAULTS)]
        ),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.globals["ci"] = ci
    return env


def render(name: str, overrides: Path = TEMPLATES, **context: Any) -> str:
    """Render template ``name`` with ``context``; a broken template is one line."""
    env = environment(overrides)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{e.filename or name}:{e.lineno}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise ConfigError(f"{_where(e, name)}: {e}") from None


def _where(e: Exception, name: str) -> str:
    """file:line of the template frame that raised, from the traceback Jinja rewrites."""
    tb = e.__traceback__
    where = name
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
