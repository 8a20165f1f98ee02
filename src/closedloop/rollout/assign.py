"""Sticky assignment of requests to the champion or the candidate.

A pure function of (key, share, salt): the same key lands on the same arm in every process
and on every machine (sha256, never Python's salted ``hash()``), and a key in the canary at
5% stays in it at 25%, because the ramp only raises the cut-off on the same uniform number.
Imports only the standard library, so a serving stack can call it on the request path.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Arm = Literal["champion", "candidate"]
ARMS: tuple[Arm, Arm] = ("champion", "candidate")


def unit(key: str, salt: str) -> float:
    """A uniform number in [0, 1) from the first 8 bytes of sha256(salt, key)."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(key: str, share: float, salt: str) -> Arm:
    """The arm for ``key`` when the candidate takes ``share`` of the traffic."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    return "candidate" if unit(str(key), salt) < share else "champion"
