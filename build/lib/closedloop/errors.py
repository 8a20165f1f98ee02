"""Every error closedloop raises on purpose, and how an entry point reports one.

A leaf module: it imports nothing from the library, so any layer may raise these, and a
command line catches them all with one ``except ClosedloopError`` without importing pandas,
pandera or SQLAlchemy to learn their exception classes. Each message is one line that names
the culprit (a file and key, a column, a version), never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class ClosedloopError(Exception):
    """Bad input that a person can fix; the message is one line naming the culprit."""


class ConfigError(ClosedloopError, ValueError):
    """A bad config: names the file that set the value and the key."""


class ConfigRuleError(ConfigError):
    """A rule that spans several keys (dates that overlap), broken at ``key``: raised inside
    the schema's validators, and reported by closedloop.config as a ConfigError at that key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class DataError(ClosedloopError, ValueError):
    """Data that does not match its declared schema: names the file or column."""


class RegistryError(ClosedloopError, ValueError):
    """The registry, or what an entry points to, is unusable."""


class StoreError(ClosedloopError, RuntimeError):
    """The feedback store could not take or commit a record."""


def run_stage(main: Callable[[], Any], doc: str | None = None) -> None:
    """Run an entry point: a ClosedloopError is one line on stderr and exit status 2.

    ``doc`` is printed for ``-h``/``--help`` instead of running, so asking a DVC stage module
    for help never starts its work.
    """
    if doc is not None and any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(doc.strip())
        return
    try:
        main()
    except ClosedloopError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
