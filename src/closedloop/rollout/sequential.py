"""Always-valid one-sided tests, so that a rollout may be checked every hour.

The boundary is the one-sided normal mixture of Howard, Ramdas, McAuliffe & Sekhon (2021),
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 49(2),
eq. (14)-(15): for a sum ``s`` with variance process ``v``, mixing exp(λs - λ²v/2) over a
half-normal λ ≥ 0 with precision ``rho`` gives the nonnegative supermartingale

    M(s, v) = sqrt(4 rho / (v + rho)) · exp(s² / (2 (v + rho))) · Φ(s / sqrt(v + rho)),

and Ville's inequality bounds the chance that it *ever* reaches 1/alpha by alpha, however often one
looks. Estimators are plugged in on the z scale, s = z·sqrt(n), v = n, which is the
asymptotic confidence sequence of Waudby-Smith, Arnold, Wu, Wang & Ramdas (2024),
"Time-uniform central limit theory and asymptotic confidence sequences", Annals of
Statistics 52(6) (the construction GrowthBook's sequential tests use). The reference values
in tests/unit/test_sequential.py are those of `confseq`, Howard's implementation.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special


def best_rho(v_opt: float, alpha: float) -> float:
    """The precision that makes the one-sided boundary tightest at ``v_opt`` (Howard et al.)."""
    l = np.log(1 / (2 * alpha))  # noqa: E741 - the paper's notation
    return float(v_opt / (2 * l + np.log(1 + 2 * l)))


def log_mixture(s, v, rho: float) -> np.ndarray:
    """log M(s, v) of the one-sided normal mixture, elementwise."""
    s, v = np.asarray(s, dtype=float), np.asarray(v, dtype=float)
    return (
        0.5 * np.log(4 * rho / (v + rho))
        + s**2 / (2 * (v + rho))
        + special.log_ndtr(s / np.sqrt(v + rho))
    )


def boundary(v: float, alpha: float, rho: float) -> float:
    """The ``s`` at which M(s, v) reaches 1/alpha: the uniform boundary at ``v``."""
    target = np.log(1 / alpha)
    f = lambda s: float(log_mixture(s, v, rho)) - target  # noqa: E731
    high = np.sqrt(2 * (v + rho) * (target + 1 + np.log1p(v / rho)))
    while f(high) < 0:
        high *= 2
    return float(optimize.brentq(f, 0.0, high, xtol=1e-10))


def evidence(z, n, n_opt: float, alpha: float) -> np.ndarray:
    """log M for a z statistic on ``n`` units (both arrays, looks on the last axis).

    Positive z is evidence *against* the null. Looks with n = 0 or a non-finite z carry no
    evidence (log M = -inf).
    """
    z, n = np.asarray(z, dtype=float), np.asarray(n, dtype=float)
    rho = best_rho(n_opt, alpha)
    ok = (n > 0) & np.isfinite(z)
    out = np.full(np.broadcast(z, n).shape, -np.inf)
    zs, ns = np.broadcast_to(z, out.shape)[ok], np.broadcast_to(n, out.shape)[ok]
    out[ok] = log_mixture(zs * np.sqrt(ns), ns, rho)
    return out


def always_valid_p(log_m) -> np.ndarray:
    """p-values valid at any stopping time: 1 / the running maximum of M, capped at 1."""
    running = np.maximum.accumulate(np.asarray(log_m, dtype=float), axis=-1)
    return np.minimum(1.0, np.exp(-running))


def bound_halfwidth(se: float, n: float, n_opt: float, alpha: float) -> float:
    """Half-width of the one-sided (1 - alpha) always-valid bound on an estimate at ``n`` units."""
    if n <= 0 or not np.isfinite(se):
        return float("inf")
    b = boundary(n, alpha, best_rho(n_opt, alpha))
    return float(se * b / np.sqrt(n))
