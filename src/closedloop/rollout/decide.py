"""The rollout decision: ramp, roll back, or hold and ask a person.

    closedloop rollout decide [--data-dir data] [--apply]

Reads the per-request records (closedloop.rollout.records) of the current step: in a canary,
the requests assigned while the candidate's share was the declared ``rollout.share``; in shadow
mode, the requests the candidate also answered in shadow. Then, in this order:

1. **Sample ratio.** A chi-square test of the arm counts against the declared share (scipy).
   A mismatch (p below ``srm_alpha``) means assignment or logging is broken and every
   comparison is biased: the outcome is ``invalid`` and nothing ramps.
2. **Harm.** Each guardrail gets an always-valid one-sided p-value for "harm beyond the
   margin" (closedloop.rollout.sequential), Holm-corrected across guardrails (statsmodels).
   Any below alpha fails the step and rolls the candidate back to 0, however early.
3. **Exposure.** Fewer than ``min_requests`` per arm, or less than ``min_hours`` of traffic:
   inconclusive, too early.
4. **Safety.** Every guardrail must show, at alpha, that its harm is *within* the margin
   (an intersection-union test: no correction needed). Then the step passes and the candidate
   ramps to the next share (from shadow mode: to the first canary share). Otherwise
   inconclusive: hold and ask a person. closedloop never ramps on inconclusive.

Writes reports/rollout.json (RolloutReport, deterministic) and reports/rollout.md (sentences
and a table; the body of the rollout PR).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import stats

from closedloop.errors import DataError
from closedloop.evaluation.statistics import holm
from closedloop.rollout import guardrails as G
from closedloop.rollout import sequential
from closedloop.rollout.records import has_rollout

DIGITS = 6
LOOK = pd.Timedelta(hours=1)  # the tests are evaluated at the end of every hour of traffic
Outcome = Literal["pass", "fail", "inconclusive", "invalid"]
Action = Literal["ramp", "rollback", "hold", "complete", "none"]


def _r(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, DIGITS) if np.isfinite(x) else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SRM(_Model):
    champion: int
    candidate: int
    expected_share: float
    observed_share: float | None
    p_value: float | None
    passed: bool


class GuardrailResult(_Model):
    metric: str
    direction: str
    margin: float
    status: Literal["harm", "safe", "unclear", "too_few"]
    champion: float | None  # the metric on each arm now (latency: p99 in ms)
    candidate: float | None
    harm: float | None  # estimated harm now, in the metric's units (latency: tail share - 1%)
    allowed: float
    harm_low: float | None  # always-valid one-sided (1 - alpha) bounds on the harm, now
    harm_high: float | None
    p_harm: float  # always-valid p-value for harm beyond the margin (over every look so far)
    p_harm_holm: float
    p_safe: float  # always-valid p-value for harm within the margin (now)
    n_champion: int
    n_candidate: int
    discordant: dict[str, int] | None = None  # shadow accuracy: McNemar's b and c
    reason: str


class Window(_Model):
    first: str | None
    last: str | None
    hours: float
    looks: int


class RolloutReport(_Model):
    mode: Literal["off", "shadow", "canary"]
    share: float
    outcome: Outcome | None
    action: Action
    next_mode: Literal["off", "shadow", "canary"]
    next_share: float
    reason: str
    alpha: float
    min_requests: int
    min_hours: float
    exposure: dict[str, int]
    window: Window
    srm: SRM | None
    guardrails: list[GuardrailResult]
    records: dict[str, int]


# ------------------------------------------------------------------- selection
def select(frame: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The records of the current step of the rollout ``cfg`` declares."""
    if not has_rollout(frame):
        return frame.iloc[0:0]
    rows = frame[frame["arm"].isin(["champion", "candidate"])]
    if cfg["mode"] == "canary":
        if "share" in rows.columns:
            share = pd.to_numeric(rows["share"], errors="coerce")
            rows = rows[np.isclose(share, cfg["share"], rtol=0, atol=1e-9)]
        return rows
    if "shadow_prediction" not in rows.columns:
        return rows.iloc[0:0]
    return rows[(rows["arm"] == "champion") & rows["shadow_prediction"].notna()]


def _bool(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].notna().to_numpy()


def traffic(rows: pd.DataFrame) -> tuple[G.Traffic, pd.Timestamp | None]:
    """The selected records as arrays, with looks counted in hours from the first request."""
    n = len(rows)
    if n == 0:
        empty = np.zeros(0)
        none = empty.astype(bool)
        return G.Traffic(
            0,
            empty.astype(int),
            empty.astype(int),
            *([none] * 2),
            empty,
            *([none] * 3),
            empty,
            none,
            none,
        ), None
    rows = rows.sort_values("ts", kind="stable")
    ts = pd.to_datetime(rows["ts"], utc=True)
    t0 = ts.min()
    look = ((ts - t0) // LOOK).to_numpy().astype(np.int64)
    label = rows["label"] if "label" in rows.columns else pd.Series([None] * n, index=rows.index)
    has_label = label.notna().to_numpy()
    if "label_ts" in rows.columns:
        label_ts = pd.to_datetime(rows["label_ts"], utc=True)
        label_ts = label_ts.where(label_ts.notna(), ts)
    else:
        label_ts = ts
    label_look = np.where(
        has_label, np.maximum(((label_ts - t0) // LOOK).fillna(0).to_numpy(), 0), -1
    ).astype(np.int64)
    n_looks = int(max(look.max(), label_look.max()) + 1)
    prediction = rows["prediction"].astype(object).to_numpy() if "prediction" in rows else None
    shadow_pred = (
        rows["shadow_prediction"].astype(object).to_numpy()
        if "shadow_prediction" in rows.columns
        else np.full(n, None, dtype=object)
    )
    labels = label.astype(object).to_numpy()
    shadow = pd.notna(shadow_pred)
    latency = pd.to_numeric(rows.get("latency_ms"), errors="coerce")
    shadow_latency = (
        pd.to_numeric(rows["shadow_latency_ms"], errors="coerce").to_numpy(dtype=float)
        if "shadow_latency_ms" in rows.columns
        else np.full(n, np.nan)
    )
    if prediction is None:
        raise DataError("rollout records: column 'prediction' is missing")
    return G.Traffic(
        n_looks=n_looks,
        look=look,
        label_look=label_look,
        candidate=(rows["arm"] == "candidate").to_numpy(),
        error=_bool(rows, "error"),
        latency=np.asarray(latency, dtype=float) if latency is not None else np.full(n, np.nan),
        correct=has_label & (prediction == labels),
        shadow=shadow,
        shadow_error=_bool(rows, "shadow_error") & shadow,
        shadow_latency=shadow_latency,
        shadow_correct=has_label & shadow & (shadow_pred == labels),
        disagree=shadow & (shadow_pred != prediction),
    ), t0


# -------------------------------------------------------------------- judging
def srm_check(rows: pd.DataFrame, share: float, srm_alpha: float) -> SRM:
    """Chi-square goodness of fit of the arm counts to the declared share."""
    n_c = int((rows["arm"] == "candidate").sum()) if len(rows) else 0
    n_h = int(len(rows) - n_c)
    total = n_c + n_h
    if total == 0 or share in (0.0, 1.0):
        return SRM(
            champion=n_h,
            candidate=n_c,
            expected_share=share,
            observed_share=_r(n_c / total) if total else None,
            p_value=None,
            passed=True,
        )
    p = float(stats.chisquare([n_h, n_c], [total * (1 - share), total * share]).pvalue)
    return SRM(
        champion=n_h,
        candidate=n_c,
        expected_share=share,
        observed_share=_r(n_c / total),
        p_value=_r(p),
        passed=p >= srm_alpha,
    )


def planned_units(cfg: dict, metric: str) -> float:
    """Where each boundary is tuned to be tightest: the units when both arms reach
    ``min_requests``. Any value fixed before the data keeps the tests valid."""
    if cfg["mode"] == "canary" and metric != "disagreement":
        return cfg["min_requests"] / min(cfg["share"], 1 - cfg["share"])
    return float(cfg["min_requests"])


def evaluate_series(s: G.Series, n_opt: float, alpha: float) -> tuple[float, float]:
    """Per look: p for harm beyond the margin (always valid: over every look so far) and p
    for harm within it (at that look)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(s.enough, s.excess / s.se, np.nan)
    p_harm = sequential.always_valid_p(sequential.evidence(z, s.units, n_opt, alpha))
    p_safe = np.minimum(1.0, np.exp(-sequential.evidence(-z, s.units, n_opt, alpha)))
    return p_harm, p_safe


NAMES = {
    "error_rate": "error rate",
    "latency_p99": "p99 latency",
    "disagreement": "disagreement with the champion",
    "accuracy": "accuracy on labelled feedback",
}


def _guardrail(g: dict, s: G.Series, mode: str, cfg: dict) -> GuardrailResult:
    alpha = cfg["alpha"]
    n_opt = planned_units(cfg, g["metric"])
    p_harms, p_safes = evaluate_series(s, n_opt, alpha)
    p_harm, p_safe = float(p_harms[0, -1]), float(p_safes[0, -1])
    enough = bool(s.enough[0, -1])
    low = high = None
    if s.harm is not None and enough:
        half = sequential.bound_halfwidth(float(s.se[0, -1]), float(s.units[0, -1]), n_opt, alpha)
        low, high = s.harm - half, s.harm + half
    champion, candidate = s.champion, s.candidate
    if mode == "shadow" and g["metric"] == "accuracy":  # paired() reports error shares
        champion = None if champion is None else 1 - champion
        candidate = None if candidate is None else 1 - candidate
    return GuardrailResult(
        metric=g["metric"],
        direction=g["direction"],
        margin=g["margin"],
        status="unclear" if enough else "too_few",
        champion=_r(champion),
        candidate=_r(candidate),
        harm=_r(s.harm),
        allowed=_r(s.allowed),
        harm_low=_r(low),
        harm_high=_r(high),
        p_harm=_r(p_harm),
        p_harm_holm=_r(p_harm),
        p_safe=_r(p_safe),
        n_champion=s.n_champion,
        n_candidate=s.n_candidate,
        discordant=None if s.b is None else {"b": s.b, "c": s.c},
        reason="",
    )


def _p(x: float) -> str:
    return "< 0.0001" if x < 1e-4 else f"= {x:.4f}"


def _describe(r: GuardrailResult, alpha: float) -> str:
    name = NAMES[r.metric]
    if r.metric == "latency_p99":
        limit = f"(1 + {r.margin:g}) x the champion's p99"
        if r.status == "harm":
            return f"{name}: more than 1% of the candidate's requests are slower than {limit} (Holm p {_p(r.p_harm_holm)})"
        if r.status == "safe":
            return f"{name}: fewer than 1% of the candidate's requests are slower than {limit} (p {_p(r.p_safe)})"
    else:
        if r.status == "harm":
            return f"{name}: the harm is beyond the margin of {r.margin:g} (bound {r.harm_low:+.4f}, Holm p {_p(r.p_harm_holm)})"
        if r.status == "safe":
            return f"{name}: the harm is within the margin of {r.margin:g} (bound {r.harm_high:+.4f}, p {_p(r.p_safe)})"
    if r.status == "too_few":
        return f"{name}: too few observations to test yet ({min(r.n_champion, r.n_candidate) if r.metric != 'disagreement' else r.n_candidate})"
    return f"{name}: not yet shown within the margin of {r.margin:g} (p {_p(r.p_safe)} > {alpha:g})"


def next_step(cfg: dict) -> tuple[str, float]:
    """Where a pass leads: the next canary share (from shadow mode, the first one)."""
    if cfg["mode"] == "shadow":
        return "canary", cfg["shares"][0]
    later = [s for s in cfg["shares"] if s > cfg["share"] + 1e-12]
    return "canary", later[0] if later else 1.0


def decide(frame: pd.DataFrame, cfg: dict, counts: dict | None = None) -> RolloutReport:
    """The decision for the rollout ``cfg`` (params ``rollout``) on per-request records."""
    mode, share = cfg["mode"], float(cfg["share"])
    base = dict(
        mode=mode,
        share=share,
        alpha=cfg["alpha"],
        min_requests=cfg["min_requests"],
        min_hours=cfg["min_hours"],
        records=counts or {"rows_in": len(frame)},
    )
    if mode == "off":
        return RolloutReport(
            **base,
            outcome=None,
            action="none",
            next_mode="off",
            next_share=share,
            reason="No rollout is in progress (rollout.mode is off).",
            exposure={},
            window=Window(first=None, last=None, hours=0.0, looks=0),
            srm=None,
            guardrails=[],
        )
    rows = select(frame, cfg)
    t, t0 = traffic(rows)
    ts = (
        pd.to_datetime(rows["ts"], utc=True)
        if len(rows)
        else pd.Series(dtype="datetime64[ns, UTC]")
    )
    hours = float((ts.max() - ts.min()) / pd.Timedelta(hours=1)) if len(rows) else 0.0
    window = Window(
        first=None if t0 is None else ts.min().isoformat(),
        last=None if t0 is None else ts.max().isoformat(),
        hours=_r(hours),
        looks=t.n_looks,
    )
    labelled = (
        rows["label"].notna() if "label" in rows.columns else pd.Series(False, index=rows.index)
    )
    if mode == "canary":
        cand = (rows["arm"] == "candidate") if len(rows) else pd.Series(dtype=bool)
        exposure = {
            "champion": int((~cand).sum()),
            "candidate": int(cand.sum()),
            "labelled_champion": int((~cand & labelled).sum()),
            "labelled_candidate": int((cand & labelled).sum()),
        }
    else:
        exposure = {"paired": len(rows), "labelled_paired": int(labelled.sum())}
    base.update(exposure=exposure, window=window)

    if mode == "canary" and share >= 1.0:
        return RolloutReport(
            **base,
            outcome=None,
            action="complete",
            next_mode="canary",
            next_share=1.0,
            srm=None,
            guardrails=[],
            reason="The candidate answers all traffic: the rollout is complete. Promote it "
            "(`closedloop promote`, through the promotion PR), then set rollout.mode to off.",
        )

    srm = srm_check(rows, share, cfg["srm_alpha"]) if mode == "canary" else None
    results = []
    for g in cfg["guardrails"]:
        s = G.series(t, mode, g) if len(rows) else None
        if s is None:
            results.append(_empty_result(g))
        else:
            results.append(_guardrail(g, s, mode, cfg))
    adjusted = holm({i: r.p_harm for i, r in enumerate(results)})
    alpha = cfg["alpha"]
    for i, r in enumerate(results):
        r.p_harm_holm = _r(adjusted[i])
        if r.p_harm_holm <= alpha:
            r.status = "harm"
        elif r.status != "too_few" and r.p_safe <= alpha:
            r.status = "safe"
        r.reason = _describe(r, alpha)

    hold = dict(action="hold", next_mode=mode, next_share=share)
    if srm is not None and not srm.passed:
        return RolloutReport(
            **base,
            **hold,
            outcome="invalid",
            srm=srm,
            guardrails=results,
            reason=f"Sample ratio mismatch: the candidate got {srm.observed_share:.2%} of "
            f"{srm.champion + srm.candidate} requests where {share:.2%} was declared "
            f"(chi-square p = {srm.p_value:.2g} < {cfg['srm_alpha']:g}). Assignment or logging is "
            "broken, so no comparison can be trusted: hold, and find the cause.",
        )
    harmful = [r for r in results if r.status == "harm"]
    if harmful:
        names = ", ".join(NAMES[r.metric] for r in harmful)
        return RolloutReport(
            **base,
            outcome="fail",
            action="rollback",
            next_mode="off",
            next_share=share,
            srm=srm,
            guardrails=results,
            reason=f"The candidate is harmful on {names} (always-valid test, Holm-corrected, "
            f"alpha = {alpha:g}): roll it back to 0.",
        )
    per_arm = (
        min(exposure.get("champion", 0), exposure.get("candidate", 0))
        if mode == "canary"
        else exposure["paired"]
    )
    if per_arm < cfg["min_requests"] or hours < cfg["min_hours"]:
        return RolloutReport(
            **base,
            **hold,
            outcome="inconclusive",
            srm=srm,
            guardrails=results,
            reason=f"Too early: {per_arm} requests per arm over {hours:.1f} hours; the step "
            f"needs {cfg['min_requests']} per arm and {cfg['min_hours']:g} hours. Hold.",
        )
    if all(r.status == "safe" for r in results):
        next_mode, next_share = next_step(cfg)
        return RolloutReport(
            **base,
            outcome="pass",
            action="ramp",
            next_mode=next_mode,
            next_share=next_share,
            srm=srm,
            guardrails=results,
            reason=f"Every guardrail is shown within its margin (alpha = {alpha:g}): ramp the "
            f"candidate to {next_share:.0%} of traffic ({next_mode}).",
        )
    unclear = ", ".join(NAMES[r.metric] for r in results if r.status != "safe")
    return RolloutReport(
        **base,
        **hold,
        outcome="inconclusive",
        srm=srm,
        guardrails=results,
        reason=f"Not enough evidence either way on {unclear}: hold at {share:.0%} and ask a "
        "person. closedloop never ramps on an inconclusive step.",
    )


def _empty_result(g: dict) -> GuardrailResult:
    return GuardrailResult(
        metric=g["metric"],
        direction=g["direction"],
        margin=g["margin"],
        status="too_few",
        champion=None,
        candidate=None,
        harm=None,
        allowed=g["margin"],
        harm_low=None,
        harm_high=None,
        p_harm=1.0,
        p_harm_holm=1.0,
        p_safe=1.0,
        n_champion=0,
        n_candidate=0,
        reason="",
    )
