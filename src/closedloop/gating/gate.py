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
from closedloop.evaluation.slices import slice_names
from closedloop.paths import DRIFT_JSON, GATE


def check(
    name: str, status: Status, value=None, threshold=None, reason: str = "", gated: bool = True
) -> Check:
    return Check(
        name=name,
        passed=status == "pass",
        status=status,
        value=value,
        threshold=threshold,
        reason=reason,
        gated=gated,
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


def _vs_champion(overall: dict[str, MetricDelta], spec: dict, level: str, task: str) -> Check:
    """Judged on the CI bound on the harmful side: the lower bound of the delta for a metric
    where higher is better, the upper bound where lower is better (RMSE)."""
    metric, mode, margin = spec["metric"], spec["mode"], spec["margin"]
    higher = registry.get(metric, task).higher_is_better
    name = f"vs_champion:{metric}"
    # The threshold the delta must clear, in metric units: superiority by +margin, or
    # non-inferiority by no worse than -margin (mirrored for a lower-is-better metric).
    gain = margin if mode == "superiority" else -margin
    threshold = gain if higher else -gain
    e = overall.get(metric)
    if e is None or e.delta is None:
        return check(name, "fail", None, threshold, "missing metric in reports/comparison.json")
    if e.ci_low is None or e.ci_high is None:
        return check(
            name,
            "fail",
            None,
            threshold,
            "no CI in reports/comparison.json (undefined on resamples)",
        )
    low, high, delta = e.ci_low, e.ci_high, e.delta
    ci = f"delta {delta:+.4f}, {level} CI [{low:+.4f}, {high:+.4f}]"
    harmful, other = (low, high) if higher else (high, low)
    side, beyond = ("lower", ">") if higher else ("upper", "<")
    clears = (lambda v: v > threshold) if higher else (lambda v: v < threshold)
    if clears(harmful):
        return check(
            name,
            "pass",
            harmful,
            threshold,
            f"{mode}: {ci}, {side} bound {beyond} {threshold:+g}",
        )
    if clears(other):
        return check(
            name,
            "inconclusive",
            harmful,
            threshold,
            f"{mode}: {ci} straddles {threshold:+g}: the data cannot tell",
        )
    worse = "<=" if higher else ">="
    return check(
        name, "fail", harmful, threshold, f"{mode}: {ci}, all of it {worse} {threshold:+g}"
    )


def _slice_regression(
    comp: SplitComparison | None,
    names: list[str],
    spec: dict,
    min_n: int,
    alpha: float,
    task: str = registry.DEFAULT_TASK,
) -> list[Check]:
    metric, max_drop = spec["metric"], spec["max_drop"]
    higher = registry.get(metric, task).higher_is_better
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
            limit = -max_drop if higher else max_drop  # the delta beyond which it is a regression
            if n < min_n:
                out.append(
                    check(
                        name,
                        "pass",
                        None,
                        limit,
                        f"n={n}: below min_slice_samples, not gated",
                        gated=False,
                    )
                )
            elif delta is None or p is None:
                out.append(check(name, "fail", None, limit, f"missing {metric} delta or p_holm"))
            elif (-delta if higher else delta) > max_drop and p < alpha:
                worse = "drops" if higher else "rises"
                out.append(
                    check(
                        name,
                        "fail",
                        delta,
                        limit,
                        f"n={n}: {metric} {worse} {abs(delta):.4f} > {max_drop}, "
                        f"significant (Holm p={p:.3g} < {alpha:.3g})",
                    )
                )
            else:
                move = "drop" if higher else "rise"
                harm = -delta if higher else delta
                why = (
                    f"no {move} beyond max_drop" if harm <= max_drop else f"{move} not significant"
                )
                out.append(
                    check(
                        name,
                        "pass",
                        delta,
                        limit,
                        f"n={n}: delta {delta:+.4f}, {why} (Holm p={p:.3g})",
                    )
                )
    return out


def _beat_baseline(comp: SplitComparison | None, spec: dict, level: str, task: str) -> list[Check]:
    """Candidate - baseline on the paired CI, one check per baseline ``spec`` names: as
    vs_champion's superiority, the bound on the harmful side must clear the margin (the lower
    bound where higher is better, the upper bound where lower is, as for RMSE)."""
    metric, margin = spec["metric"], spec["margin"]
    higher = registry.get(metric, task).higher_is_better
    threshold = margin if higher else -margin
    side, beyond, worse = ("lower", ">", "<=") if higher else ("upper", "<", ">=")
    clears = (lambda v: v > threshold) if higher else (lambda v: v < threshold)
    out = []
    for base in spec["baselines"]:
        name = f"beat_baseline:{base}:{metric}"
        b = None if comp is None else comp.baselines.get(base)
        e = None if b is None else b.metrics.get(metric)
        if b is None and comp is not None and comp.n and base == "persistence":
            why = "no persistence baseline: the dataset has no time_column"
            out.append(check(name, "fail", None, threshold, why))
            continue
        if e is None:
            why = "missing baseline in reports/comparison.json"
            out.append(check(name, "fail", None, threshold, why))
            continue
        if e.ci_low is None or e.ci_high is None:
            why = "no CI in reports/comparison.json (undefined on resamples)"
            out.append(check(name, "fail", None, threshold, why))
            continue
        harmful, other = (e.ci_low, e.ci_high) if higher else (e.ci_high, e.ci_low)
        ci = (
            f"{e.candidate:.4f} vs {e.baseline:.4f} ({b.description}): "
            f"delta {e.delta:+.4f}, {level} CI [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"
        )
        if clears(harmful):
            why = f"{ci}, {side} bound {beyond} {threshold:+g}"
            out.append(check(name, "pass", harmful, threshold, why))
        elif clears(other):
            why = f"{ci} straddles {threshold:+g}: the data cannot tell"
            out.append(check(name, "inconclusive", harmful, threshold, why))
        else:
            why = f"{ci}, all of it {worse} {threshold:+g}"
            out.append(check(name, "fail", harmful, threshold, why))
    return out


def _drift(drift: DriftReport | None, spec: dict) -> list[Check]:
    share, columns = spec["max_drifted_share"], spec["columns"]
    names = ["drift:max_drifted_share"] + [f"drift:column:{c}" for c in columns]
    if drift is None:
        return [check(n, "fail", None, None, f"{DRIFT_JSON} missing") for n in names]
    value = drift.drifted_share
    if share is None:
        out = [check(names[0], "pass", value, None, "report only", gated=False)]
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
        checks += [_vs_champion(overall, s, level, task) for s in g["vs_champion"]]
        if g["slice_regression"] is not None:
            checks += _slice_regression(
                comp,
                slice_names,
                g["slice_regression"],
                g["min_slice_samples"],
                1 - confidence_level,
                task,
            )
    elif g["first_model"] == "floors_only":
        policy = "first_model:floors_only"
        checks.append(
            check(
                "first_model",
                "pass",
                reason="no champion yet: policy floors_only skips vs_champion and slice_regression",
                gated=False,
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
        checks += _beat_baseline(comp, g["beat_baseline"], f"{confidence_level:.0%}", task)
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
    schema = SnapshotSchema.read()
    result = judge(
        comparison,
        Metrics.read(),
        DriftReport.read_if_present(),
        schema,
        params["gates"],
        ChampionEntry.read(),
        ModelCard.read().weights_sha256,
        slice_names=slice_names(params["slices"], schema.feature_types.categorical),
        confidence_level=params["metrics"]["confidence_level"],
        task=schema.task,
    )
    result.write()
    return result
