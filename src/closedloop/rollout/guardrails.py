"""Guardrail statistics at every look: how much harm, with what standard error, on how many units.

Each guardrail turns the traffic so far into an *excess* (the estimated harm minus what its
margin allows; positive is worse than allowed), its standard error and the number of units,
at each look (the end of each hour of traffic). closedloop.rollout.sequential turns those into
always-valid evidence; closedloop.rollout.decide into a decision.

Canary (independent arms): error rate and accuracy compare the arms' proportions; p99 latency
asks whether more than 1% of the candidate's requests are slower than (1 + margin) times the
champion's running p99; disagreement is the share of candidate requests on which the champion
(run in shadow) predicts another class. Shadow (paired, the same requests): differences per
request, the sequential counterpart of the offline gate's McNemar comparison. Rates use
Agresti-Caffo smoothed variances (one success and one failure added), so an arm with no
errors yet does not claim zero variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Q99 = 0.99
TAIL = 1 - Q99
RATIO = 1.005  # latency histogram bins are 0.5% wide: the running p99 is exact to that


@dataclass
class Traffic:
    """One entry per request; ``look`` indexes the hour it was answered in.

    ``run`` numbers independent experiments held side by side (simulations); real traffic is
    one run. Every statistic below has shape (n_runs, n_looks).
    """

    n_looks: int
    look: np.ndarray  # int
    label_look: np.ndarray  # int, -1 when no label has arrived
    candidate: np.ndarray  # bool: the candidate answered (canary)
    error: np.ndarray  # bool: the answering model failed
    latency: np.ndarray  # float ms
    correct: np.ndarray  # bool: the answer equals the label (meaningful where labelled)
    shadow: np.ndarray  # bool: the other model also ran on this request
    shadow_error: np.ndarray  # bool
    shadow_latency: np.ndarray  # float ms (NaN where it did not run)
    shadow_correct: np.ndarray  # bool
    disagree: np.ndarray  # bool: the two models predicted different classes
    run: np.ndarray | None = None  # int, which experiment; None: one
    n_runs: int = 1


@dataclass
class Series:
    """One guardrail along the looks (arrays of shape (n_runs, n_looks)), and its values now
    (of the first run)."""

    excess: np.ndarray
    se: np.ndarray
    units: np.ndarray
    enough: np.ndarray  # bool: every group has min_samples observations
    champion: float | None  # the metric on each side now (latency: p99 in ms)
    candidate: float | None
    n_champion: int
    n_candidate: int
    harm: float | None  # the estimated harm now, in the metric's units
    allowed: float  # the harm allowed (the margin; 0 for latency, whose margin is in its threshold)
    b: int | None = None  # paired accuracy: champion right and candidate wrong
    c: int | None = None  # candidate right and champion wrong


def _key(t: Traffic, looks: np.ndarray) -> np.ndarray:
    return looks if t.run is None else t.run * t.n_looks + looks


def _cum(t: Traffic, mask: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """Cumulative counts of ``mask`` rows per look, (n_runs, n_looks)."""
    keep = mask & (looks >= 0)
    cells = t.n_runs * t.n_looks
    counts = np.bincount(_key(t, looks)[keep], minlength=cells)[:cells]
    return np.cumsum(counts.reshape(t.n_runs, t.n_looks), axis=1).astype(float)


def _rate(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, x / n, np.nan)


def _smoothed_var(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    p = (x + 1) / (n + 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, p * (1 - p) / n, np.inf)


def _last(a: np.ndarray) -> float | None:
    value = float(a[0, -1]) if a.size else float("nan")
    return None if not np.isfinite(value) else value


def _count(a: np.ndarray) -> int:
    return int(a[0, -1]) if a.size else 0


def two_proportions(
    t: Traffic, outcome: np.ndarray, rows: np.ndarray, looks: np.ndarray, harm_sign: int, cfg
) -> Series:
    """Candidate minus champion (harm_sign=+1: error rate) or the reverse (-1: accuracy)."""
    n_c, n_h = _cum(t, rows & t.candidate, looks), _cum(t, rows & ~t.candidate, looks)
    x_c = _cum(t, rows & t.candidate & outcome, looks)
    x_h = _cum(t, rows & ~t.candidate & outcome, looks)
    p_c, p_h = _rate(x_c, n_c), _rate(x_h, n_h)
    harm = harm_sign * (p_c - p_h)
    se = np.sqrt(_smoothed_var(x_c, n_c) + _smoothed_var(x_h, n_h))
    return Series(
        excess=harm - cfg["margin"],
        se=se,
        units=n_c + n_h,
        enough=np.minimum(n_c, n_h) >= cfg["min_samples"],
        champion=_last(p_h),
        candidate=_last(p_c),
        n_champion=_count(n_h),
        n_candidate=_count(n_c),
        harm=_last(harm),
        allowed=cfg["margin"],
    )


def paired(
    t: Traffic, champ_bad: np.ndarray, cand_bad: np.ndarray, rows: np.ndarray, looks, cfg
) -> Series:
    """Paired on the same requests: the candidate's bad outcomes minus the champion's."""
    n = _cum(t, rows, looks)
    b = _cum(t, rows & cand_bad & ~champ_bad, looks)  # only the candidate is bad
    c = _cum(t, rows & champ_bad & ~cand_bad, looks)
    mean = _rate(b - c, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (b + c + 2) / (n + 2) - ((b - c) / (n + 2)) ** 2
        se = np.where(n > 0, np.sqrt(var / n), np.inf)
    return Series(
        excess=mean - cfg["margin"],
        se=se,
        units=n,
        enough=n >= cfg["min_samples"],
        champion=_last(_rate(_cum(t, rows & champ_bad, looks), n)),
        candidate=_last(_rate(_cum(t, rows & cand_bad, looks), n)),
        n_champion=_count(n),
        n_candidate=_count(n),
        harm=_last(mean),
        allowed=cfg["margin"],
        b=_count(b),
        c=_count(c),
    )


def one_proportion(t: Traffic, outcome: np.ndarray, rows: np.ndarray, cfg) -> Series:
    """A rate that must stay at or below its margin (disagreement with the champion)."""
    n, x = _cum(t, rows, t.look), _cum(t, rows & outcome, t.look)
    d = _rate(x, n)
    return Series(
        excess=d - cfg["margin"],
        se=np.sqrt(_smoothed_var(x, n)),
        units=n,
        enough=n >= cfg["min_samples"],
        champion=0.0,
        candidate=_last(d),
        n_champion=0,
        n_candidate=_count(n),
        harm=_last(d),
        allowed=cfg["margin"],
    )


def _histograms(t: Traffic, values, rows, lo: float, bins: int) -> np.ndarray:
    """Cumulative per-look histograms (n_runs, n_looks, bins) of positive values, log bins."""
    idx = np.clip((np.log(values[rows] / lo) / np.log(RATIO)).astype(np.int64), 0, bins - 1)
    cells = t.n_runs * t.n_looks * bins
    counts = np.bincount(_key(t, t.look)[rows] * bins + idx, minlength=cells)
    return np.cumsum(counts.reshape(t.n_runs, t.n_looks, bins), axis=1)


def latency_tail(
    t: Traffic,
    champ_lat: np.ndarray,
    champ_rows: np.ndarray,
    cand_lat: np.ndarray,
    cand_rows: np.ndarray,
    cfg,
) -> Series:
    """Share of the candidate's requests slower than (1 + margin) x the champion's running
    p99, minus the 1% a p99 allows. Both p99s are read off 0.5%-wide log bins."""
    champ_rows = champ_rows & np.isfinite(champ_lat) & (champ_lat > 0)
    cand_rows = cand_rows & np.isfinite(cand_lat) & (cand_lat > 0)
    n_h, n_c = _cum(t, champ_rows, t.look), _cum(t, cand_rows, t.look)
    shape = n_h.shape
    if not champ_rows.any() or not cand_rows.any():
        return Series(
            excess=np.full(shape, np.nan),
            se=np.full(shape, np.inf),
            units=n_h + n_c,
            enough=np.zeros(shape, dtype=bool),
            champion=None,
            candidate=None,
            n_champion=_count(n_h),
            n_candidate=_count(n_c),
            harm=None,
            allowed=0.0,
        )
    both = np.concatenate([champ_lat[champ_rows], cand_lat[cand_rows]])
    lo, hi = both.min() / RATIO, both.max() * RATIO
    bins = int(np.ceil(np.log(hi / lo) / np.log(RATIO))) + 2
    h = _histograms(t, champ_lat, champ_rows, lo, bins)
    c = _histograms(t, cand_lat, cand_rows, lo, bins)
    rank = np.ceil(Q99 * n_h)  # the p99 is the first bin holding the rank-th value
    p99_bin = (np.cumsum(h, axis=2) < rank[..., None]).sum(axis=2)  # bins wholly below it
    threshold = lo * RATIO ** (p99_bin + 1) * (1 + cfg["margin"])
    first_slow = np.ceil(np.log(threshold / lo) / np.log(RATIO)).astype(np.int64)
    above = np.cumsum(c[..., ::-1], axis=2)[..., ::-1]  # candidates in this bin or higher
    above = np.concatenate([above, np.zeros((*shape, 1))], axis=2)
    slow = np.take_along_axis(above, np.clip(first_slow, 0, bins)[..., None], axis=2)[..., 0]
    q = _rate(slow, n_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        champ_var = np.where(n_h > 0, TAIL * Q99 / n_h, np.inf)
    champ_first = champ_rows if t.run is None else champ_rows & (t.run == 0)
    cand_first = cand_rows if t.run is None else cand_rows & (t.run == 0)
    return Series(
        excess=q - TAIL,
        se=np.sqrt(_smoothed_var(slow, n_c) + champ_var),
        units=n_h + n_c,
        enough=np.minimum(n_h, n_c) >= cfg["min_samples"],
        champion=float(np.quantile(champ_lat[champ_first], Q99)),
        candidate=float(np.quantile(cand_lat[cand_first], Q99)),
        n_champion=_count(n_h),
        n_candidate=_count(n_c),
        harm=_last(q - TAIL),
        allowed=0.0,
    )


def series(t: Traffic, mode: str, cfg: dict) -> Series:
    """The statistics of one guardrail (``cfg``: metric, margin, min_samples) in ``mode``."""
    metric = cfg["metric"]
    everyone = np.ones(len(t.look), dtype=bool)
    labelled = t.label_look >= 0
    if mode == "canary":
        if metric == "error_rate":
            return two_proportions(t, t.error, everyone, t.look, +1, cfg)
        if metric == "accuracy":
            return two_proportions(t, t.correct, labelled, t.label_look, -1, cfg)
        if metric == "latency_p99":
            return latency_tail(t, t.latency, ~t.candidate, t.latency, t.candidate, cfg)
        return one_proportion(t, t.disagree, t.candidate & t.shadow, cfg)
    if metric == "error_rate":
        return paired(t, t.error, t.shadow_error, t.shadow, t.look, cfg)
    if metric == "accuracy":
        return paired(t, ~t.correct, ~t.shadow_correct, t.shadow & labelled, t.label_look, cfg)
    if metric == "latency_p99":
        return latency_tail(t, t.latency, t.shadow, t.shadow_latency, t.shadow, cfg)
    return one_proportion(t, t.disagree, t.shadow, cfg)
