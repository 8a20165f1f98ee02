"""The always-valid tests: known values of the boundary, and no false-alarm inflation when the
guardrails are checked after every batch of traffic (simulated A/A rollouts, vectorised)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from closedloop.evaluation.statistics import holm
from closedloop.rollout import guardrails as G
from closedloop.rollout import sequential
from closedloop.rollout.decide import evaluate_series

ALPHA = 0.05


def test_one_sided_normal_mixture_matches_confseq_reference_values():
    # confseq's unit tests (Howard's reference implementation in R): v_opt = 100, alpha = 0.05
    rho = sequential.best_rho(100, 0.05)
    assert sequential.log_mixture(10, 100, rho) == pytest.approx(-0.06502391, abs=1e-7)
    assert sequential.boundary(100, 0.05, rho) == pytest.approx(27.66071, abs=1e-5)


def test_mixture_is_its_defining_integral():
    """M(s, v) = ∫_0^∞ exp(λs - λ²v/2) · 2·N(λ; 0, 1/rho) dλ, at a few points."""
    rho = sequential.best_rho(500, 0.05)
    for s, v in [(0.0, 50.0), (12.0, 300.0), (-5.0, 40.0), (40.0, 900.0)]:
        density = lambda lam, s=s, v=v: (  # noqa: E731
            np.exp(lam * s - lam**2 * v / 2) * 2 * stats.norm.pdf(lam, 0, 1 / np.sqrt(rho))
        )
        expected = np.log(integrate.quad(density, 0, np.inf)[0])
        assert sequential.log_mixture(s, v, rho) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_always_valid_p_is_the_running_minimum():
    log_m = np.array([[-1.0, 2.0, 0.5, 3.5, 1.0]])
    p = sequential.always_valid_p(log_m)
    assert np.allclose(p, np.minimum(1, np.exp(-np.array([[-1.0, 2.0, 2.0, 3.5, 3.5]]))))


def aa_traffic(seed: int, runs: int, batches: int, per_batch: int, share: float) -> G.Traffic:
    """``runs`` independent A/A canaries (both arms the same model), ``batches`` looks each."""
    rng = np.random.default_rng(seed)
    n = runs * batches * per_batch
    run = np.repeat(np.arange(runs), batches * per_batch)
    look = np.tile(np.repeat(np.arange(batches), per_batch), runs)
    labelled = rng.random(n) < 0.5
    return G.Traffic(
        n_looks=batches,
        look=look,
        label_look=np.where(labelled, look, -1),
        candidate=rng.random(n) < share,
        error=rng.random(n) < 0.02,
        latency=rng.lognormal(np.log(40), 0.3, n),
        correct=rng.random(n) < 0.8,
        shadow=np.ones(n, dtype=bool),
        shadow_error=np.zeros(n, dtype=bool),
        shadow_latency=np.full(n, np.nan),
        shadow_correct=np.zeros(n, dtype=bool),
        disagree=rng.random(n) < 0.1,
        run=run,
        n_runs=runs,
    )


# Every null at its boundary, the hardest case: no margin on error rate, accuracy and latency,
# and a disagreement rate exactly at its margin.
GUARDRAILS = [
    {"metric": "error_rate", "margin": 0.0, "min_samples": 100},
    {"metric": "latency_p99", "margin": 0.0, "min_samples": 100},
    {"metric": "disagreement", "margin": 0.1, "min_samples": 100},
    {"metric": "accuracy", "margin": 0.0, "min_samples": 100},
]
RUNS, BATCHES, PER_BATCH, SHARE = 300, 30, 400, 0.25


@pytest.fixture(scope="module")
def aa():
    t = aa_traffic(7, RUNS, BATCHES, PER_BATCH, SHARE)
    cfg = {"mode": "canary", "share": SHARE, "min_requests": 1000}
    n_opt = 1000 / SHARE
    series = [G.series(t, "canary", g) for g in GUARDRAILS]
    p = np.stack([evaluate_series(s, n_opt, ALPHA)[0] for s in series], axis=-1)
    return t, cfg, series, p  # p: (runs, looks, guardrails), always-valid p for harm


def test_peeking_after_every_batch_keeps_false_alarms_within_alpha(aa):
    _, _, _, p = aa
    k = p.shape[-1]
    # Holm rejects at least one guardrail exactly when the smallest p is at most alpha / k
    alarm_at_look = p.min(axis=-1) <= ALPHA / k
    false_alarms = int(alarm_at_look.any(axis=1).sum())
    bound = stats.binom.ppf(0.99, RUNS, ALPHA)  # what a rate of exactly alpha could give
    assert false_alarms <= bound, f"{false_alarms}/{RUNS} A/A runs alarmed at some look"
    # the first-step shortcut is Holm's rule, as decide applies it
    for cell in [(0, -1), (5, 10), (17, 3)]:
        adjusted = holm(dict(enumerate(p[cell])))
        assert (min(adjusted.values()) <= ALPHA) == bool(alarm_at_look[cell])


def test_the_same_harness_catches_naive_peeking(aa):
    """A fixed-sample one-sided z test checked after every batch alarms far more than alpha:
    the simulation can see inflation, so the test above can fail."""
    _, _, series, _ = aa
    z = np.stack([np.where(s.enough, s.excess / s.se, -np.inf) for s in series], axis=-1)
    naive = (z > stats.norm.ppf(1 - ALPHA / len(series))).any(axis=-1).any(axis=1)
    assert naive.sum() > stats.binom.ppf(0.999, RUNS, ALPHA), naive.sum()


def test_a_real_harm_is_found_by_the_same_machinery():
    t = aa_traffic(11, 20, BATCHES, PER_BATCH, SHARE)
    t.error = np.where(t.candidate, np.random.default_rng(3).random(len(t.look)) < 0.05, t.error)
    s = G.series(t, "canary", GUARDRAILS[0])
    p_harm, _ = evaluate_series(s, 1000 / SHARE, ALPHA)
    assert (p_harm[:, -1] <= ALPHA / len(GUARDRAILS)).all()
