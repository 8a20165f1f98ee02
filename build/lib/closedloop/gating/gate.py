"""Stage `gate`: the verdict on the candidate, from the gates declared in conf/gates/.

Reads params `gates`, `slices` and `metrics.confidence_level`; reports/comparison.json,
reports/metrics.json, reports/drift.json, the snapshot's schema, the candidate's card and the
champion's entry. Writes reports/gate.json. Gates judge confidence bounds, not point estimates:
a check the data cannot settle is inconclusive, and inconclusive is never a pass. The stage
exits 0 on any verdict, so the report still renders; the verdict is in the file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from closedloop import metrics as registry
from closedloop.artefacts.card import ModelCard
from closedloop.artefacts.champion import ChampionEntry
from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison, MetricDelta, Metrics, SplitComparison
from closedloop.artefacts.gate import Check, GateChampion, GateReport, Status, verdict_of
from closedloop.artefacts.snapshot import SnapshotSchema, SplitInfo
from closedloop.paths import DRIFT_JSON, GATE


def check(name: str, status: Status, value=None, threshold=None, reason: str = "") -> Check:
    return Check(
        name=name,
        passed=status == "pass",
        status=status,
        value=value,
        threshold=threshold,
        reason=reason,
    )


def _min_samples(n: int | None, minimum: int) -> Check:
    if n is None:
        return check("min_samples", "fail", None, minimum, "split missing from the reports")
    if n < minimum:
        return check(
            "min_samples", "inconclusive", n, minimum, f"{n} < {minimum} examples: too few to judge"
        )
    return check("min_samples", "pass", n, minimum, f"{n} >= {minimum} examples")


def _floors(split_metrics, floors: dict, task: str) -> list[Check]:
    out = []
    for name, limit in floors.items():
        metric = registry.get(name, task)
        value = None if split_metrics is None else split_metrics.value(name)
        check_name = f"floor:{name}"
        if value is None:
            out.append(
                check(check_name, "fail", None, limit, "missing metric in reports/metrics.json")
            )
            continue
        ok = metric.meets(value, limit)
        if metric.higher_is_better:
            reason = f"{value:.4f} must be >= {limit}"
        else:
            reason = f"{value:.4f} must be <= {limit} (lower is better)"
        out.append(check(check_name, "pass" if ok else "fail", value, limit, reason))
    return out


def _vs_champion(overall: dict[str, MetricDelta], spec: dict, level: str) -> Check:
    metric, mode, margin = spec["metric"], spec["mode"], spec["margin"]
    name = f"vs_champion:{metric}"
    threshold = margin if mode == "superiority" else -margin
    e = overall.get(metric)
    if e is None or e.ci_low is None or e.ci_high is None or e.delta is None:
        return check(name, "fail", None, threshold, "missing metric in reports/comparison.json")
    low, high, delta = e.ci_low, e.ci_high, e.delta
    ci = f"delta {delta:+.4f}, {level} CI [{low:+.4f}, {high:+.4f}]"
    if low > threshold:
        return check(name, "pass", low, threshold, f"{mode}: {ci}, lower bound > {threshold:+g}")
    if high > threshold:
        return check(
            name,
            "inconclusive",
            low,
            threshold,
            f"{mode}: {ci} straddles {threshold:+g}: the data cannot tell",
        )
    return check(name, "fail", low, threshold, f"{mode}: {ci}, all of it <= {threshold:+g}")


def _slice_regression(
    comp: SplitComparison | None, names: list[str], spec: dict, min_n: int, alpha: float
) -> list[Check]:
    metric, max_drop = spec["metric"], spec["max_drop"]
    slices = comp.slices if comp is not None else {}
    out = []
    for sname in names:
        if sname not in slices:
            out.append(
                check(
                    f"slice:{sname}", "fail", None, None, "missing slice in reports/comparison.json"
                )
            )
            continue
        for value, s in sorted(slices[sname].items()):
            name, n = f"slice:{sname}={value}", s.n
            scores, p = s.metric(metric), s.p_holm
            delta = None if scores is None else scores.delta
            if n < min_n:
                out.append(
                    check(
                        name, "pass", None, -max_drop, f"n={n}: below min_slice_samples, not gated"
                    )
                )
            elif delta is None or p is None:
                out.append(
                    check(name, "fail", None, -max_drop, f"missing {metric} delta or p_holm")
                )
            elif delta < -max_drop and p < alpha:
                out.append(
                    check(
                        name,
                        "fail",
                        delta,
                        -max_drop,
                        f"n={n}: {metric} drops {-delta:.4f} > {max_drop}, "
                        f"significant (Holm p={p:.3g} < {alpha:.3g})",
                    )
                )
            else:
                why = "no drop beyond max_drop" if delta >= -max_drop else "drop not significant"
                out.append(
                    check(
                        name,
                        "pass",
                        delta,
                        -max_drop,
                        f"n={n}: delta {delta:+.4f}, {why} (Holm p={p:.3g})",
                    )
                )
    return out


def _beat_baseline(comp: SplitComparison | None, metric: str) -> Check:
    name = f"beat_baseline:{metric}"
    scores = None if comp is None else comp.overall.get(metric)
    cand = None if scores is None else scores.candidate
    base = None if comp is None else comp.baseline.get(metric)
    if cand is None or base is None:
        return check(name, "fail", cand, base, "missing metric in reports/comparison.json")
    ok = cand > base
    return check(
        name,
        "pass" if ok else "fail",
        cand,
        base,
        f"{cand:.4f} must be > {base:.4f} (most-frequent-class dummy)",
    )


def _drift(drift: DriftReport | None, spec: dict) -> list[Check]:
    share, columns = spec["max_drifted_share"], spec["columns"]
    names = ["drift:max_drifted_share"] + [f"drift:column:{c}" for c in columns]
    if drift is None:
        return [check(n, "fail", None, None, f"{DRIFT_JSON} missing") for n in names]
    value = drift.drifted_share
    if share is None:
        out = [check(names[0], "pass", value, None, "report only")]
    else:
        ok = value <= share
        out = [
            check(
                names[0], "pass" if ok else "fail", value, share, f"{value:.3f} must be <= {share}"
            )
        ]
    for name, column in zip(names[1:], columns, strict=True):
        c = drift.columns.get(column)
        if c is None:
            out.append(check(name, "fail", None, None, f"column missing in {DRIFT_JSON}"))
        else:
            how = f"{c.method} {c.score} vs threshold {c.threshold}"
            out.append(
                check(
                    name,
                    "fail" if c.drifted else "pass",
                    c.score,
                    c.threshold,
                    f"{'drifted' if c.drifted else 'no drift'}: {how}",
                )
            )
    return out


def _staleness(split: SplitInfo | None, max_days: int, as_of: str | None) -> Check:
    today = dt.date.fromisoformat(as_of) if as_of else dt.datetime.now(dt.timezone.utc).date()
    newest = None if split is None else split.time_max
    if newest is None:
        return check("staleness", "fail", None, max_days, "no time column: data age unknown")
    age = (today - dt.date.fromisoformat(newest[:10])).days
    ok = age <= max_days
    return check(
        "staleness",
        "pass" if ok else "fail",
        age,
        max_days,
        f"newest row {newest[:10]} is {age} days old on {today} (max {max_days})",
    )


def judge(
    comparison: Comparison,
    metrics: Metrics,
    drift: DriftReport | None,
    schema: SnapshotSchema,
    gates_cfg: dict,
    champion: ChampionEntry | None,
    model_hash: str,
    *,
    slice_names: list[str],
    confidence_level: float,
    task: str = registry.DEFAULT_TASK,
) -> GateReport:
    """The gate verdict for a candidate. ``champion`` is the entry of a present champion (None
    before the first promotion), ``slice_names`` the slices params declares (each must be in
    the comparison). A split the reports lack fails every check that needs it."""
    g, split = gates_cfg, gates_cfg["split"]
    comp = comparison.splits.get(split)
    split_metrics = metrics.get(split)
    n = comp.n if comp is not None else None if split_metrics is None else split_metrics.n
    checks = [_min_samples(n, g["min_samples"]), *_floors(split_metrics, g["floors"], task)]
    if champion is not None:
        policy = "vs_champion"
        level = f"{confidence_level:.0%}"
        overall = comp.overall if comp is not None else {}
        checks += [_vs_champion(overall, s, level) for s in g["vs_champion"]]
        if g["slice_regression"] is not None:
            checks += _slice_regression(
                comp,
                slice_names,
                g["slice_regression"],
                g["min_slice_samples"],
                1 - confidence_level,
            )
    elif g["first_model"] == "floors_only":
        policy = "first_model:floors_only"
        checks.append(
            check(
                "first_model",
                "pass",
                reason="no champion yet: policy floors_only skips vs_champion and slice_regression",
            )
        )
    else:
        policy = "first_model:fail"
        checks.append(
            check(
                "first_model",
                "fail",
                reason="no champion yet and gates.first_model is fail: promote a first model by hand",
            )
        )
    if g["beat_baseline"] is not None:
        checks.append(_beat_baseline(comp, g["beat_baseline"]))
    checks += _drift(drift, g["drift"])
    if g["max_data_age_days"] is not None:
        checks.append(_staleness(schema.splits.get(split), g["max_data_age_days"], g["as_of"]))
    return GateReport(
        verdict=verdict_of(checks),
        model_hash=model_hash,
        champion=None
        if champion is None
        else GateChampion(version=champion.version, model_hash=champion.model_hash),
        split=split,
        policy=policy,
        checks=checks,
    )


def check_verdict(path: Path = GATE) -> int:
    """Exit status for CI: 0 only when the recorded verdict is pass (a required check)."""
    gate = GateReport.read(path)
    for c in gate.checks:
        if c.status != "pass":
            print(f"{c.status}: {c.name}: {c.reason}")
    print(f"gate verdict: {gate.verdict}")
    return 0 if gate.verdict == "pass" else 1


def gate_reports(params: dict) -> GateReport:
    """Judge the candidate from the reports evaluate and drift wrote; write reports/gate.json."""
    comparison = Comparison.read()
    result = judge(
        comparison,
        Metrics.read(),
        DriftReport.read_if_present(),
        SnapshotSchema.read(),
        params["gates"],
        ChampionEntry.read(),
        ModelCard.read().weights_sha256,
        slice_names=[s["name"] for s in params["slices"]["slices"]],
        confidence_level=params["metrics"]["confidence_level"],
    )
    result.write()
    return result
