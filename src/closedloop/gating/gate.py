"""Stage `gate`: the verdict on the candidate, from the gates declared in conf/gates/.

Reads params `gates`, `slices` and `metrics.confidence_level`; reports/comparison.json,
reports/metrics.json, reports/drift.json, the snapshot's schema, the candidate's card and the
champion's entry. Writes reports/gate.json. Gates judge confidence bounds, not point estimates:
a check the data cannot settle is inconclusive, and inconclusive is never a pass. The stage
exits 0 on any verdict, so the report still renders; the verdict is in the file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from closedloop.errors import DataError
from closedloop.io import read_json, write_json
from closedloop.paths import (
    CANDIDATE_DIR,
    CARD_JSON,
    CHAMPION_ENTRY,
    COMPARISON,
    DRIFT_JSON,
    GATE,
    METRICS,
    SCHEMA,
)

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "ece": False}


def check(name: str, status: str, value=None, threshold=None, reason: str = "") -> dict:
    return {
        "name": name,
        "passed": status == "pass",
        "status": status,
        "value": value,
        "threshold": threshold,
        "reason": reason,
    }


def verdict(checks: list[dict]) -> str:
    """Any fail fails; otherwise any inconclusive is inconclusive; only all-pass passes."""
    statuses = {c["status"] for c in checks}
    return (
        "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"
    )


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _min_samples(n, minimum: int) -> dict:
    if not _number(n):
        return check("min_samples", "fail", None, minimum, "split missing from the reports")
    if n < minimum:
        return check(
            "min_samples", "inconclusive", n, minimum, f"{n} < {minimum} examples: too few to judge"
        )
    return check("min_samples", "pass", n, minimum, f"{n} >= {minimum} examples")


def _floors(split_metrics: dict, floors: dict) -> list[dict]:
    out = []
    for metric, limit in floors.items():
        name, value = f"floor:{metric}", split_metrics.get(metric)
        if not _number(value):
            out.append(check(name, "fail", None, limit, "missing metric in reports/metrics.json"))
        elif HIGHER_IS_BETTER[metric]:
            ok = value >= limit
            out.append(
                check(
                    name, "pass" if ok else "fail", value, limit, f"{value:.4f} must be >= {limit}"
                )
            )
        else:
            ok = value <= limit
            out.append(
                check(
                    name,
                    "pass" if ok else "fail",
                    value,
                    limit,
                    f"{value:.4f} must be <= {limit} (lower is better)",
                )
            )
    return out


def _vs_champion(overall: dict, spec: dict, level: str) -> dict:
    metric, mode, margin = spec["metric"], spec["mode"], spec["margin"]
    name = f"vs_champion:{metric}"
    threshold = margin if mode == "superiority" else -margin
    e = overall.get(metric) or {}
    low, high, delta = e.get("ci_low"), e.get("ci_high"), e.get("delta")
    if not all(_number(x) for x in (low, high, delta)):
        return check(name, "fail", None, threshold, "missing metric in reports/comparison.json")
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
    slices: dict, names: list[str], spec: dict, min_n: int, alpha: float
) -> list[dict]:
    metric, max_drop = spec["metric"], spec["max_drop"]
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
            name, n = f"slice:{sname}={value}", s.get("n", 0)
            delta, p = (s.get(metric) or {}).get("delta"), s.get("p_holm")
            if n < min_n:
                out.append(
                    check(
                        name, "pass", None, -max_drop, f"n={n}: below min_slice_samples, not gated"
                    )
                )
            elif not (_number(delta) and _number(p)):
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


def _beat_baseline(comp: dict, metric: str) -> dict:
    name = f"beat_baseline:{metric}"
    cand = ((comp.get("overall") or {}).get(metric) or {}).get("candidate")
    base = (comp.get("baseline") or {}).get(metric)
    if not (_number(cand) and _number(base)):
        return check(name, "fail", cand, base, "missing metric in reports/comparison.json")
    ok = cand > base
    return check(
        name,
        "pass" if ok else "fail",
        cand,
        base,
        f"{cand:.4f} must be > {base:.4f} (most-frequent-class dummy)",
    )


def _drift(drift: dict | None, spec: dict) -> list[dict]:
    share, columns = spec["max_drifted_share"], spec["columns"]
    names = ["drift:max_drifted_share"] + [f"drift:column:{c}" for c in columns]
    if drift is None:
        return [check(n, "fail", None, None, f"{DRIFT_JSON} missing") for n in names]
    value = drift.get("drifted_share")
    if share is None:
        out = [check(names[0], "pass", value, None, "report only")]
    elif not _number(value):
        out = [check(names[0], "fail", None, share, f"drifted_share missing in {DRIFT_JSON}")]
    else:
        ok = value <= share
        out = [
            check(
                names[0], "pass" if ok else "fail", value, share, f"{value:.3f} must be <= {share}"
            )
        ]
    for name, column in zip(names[1:], columns, strict=True):
        c = (drift.get("columns") or {}).get(column)
        if c is None:
            out.append(check(name, "fail", None, None, f"column missing in {DRIFT_JSON}"))
        else:
            how = f"{c.get('method')} {c.get('score')} vs threshold {c.get('threshold')}"
            status = "fail" if c.get("drifted") else "pass"
            out.append(
                check(
                    name,
                    status,
                    c.get("score"),
                    c.get("threshold"),
                    f"{'drifted' if c.get('drifted') else 'no drift'}: {how}",
                )
            )
    return out


def _staleness(split_schema: dict | None, max_days: int, as_of: str | None) -> dict:
    today = dt.date.fromisoformat(as_of) if as_of else dt.datetime.now(dt.timezone.utc).date()
    newest = (split_schema or {}).get("time_max")
    if newest is None:
        return check("staleness", "fail", None, max_days, "no time column: data age unknown")
    age = (today - dt.date.fromisoformat(str(newest)[:10])).days
    ok = age <= max_days
    return check(
        "staleness",
        "pass" if ok else "fail",
        age,
        max_days,
        f"newest row {str(newest)[:10]} is {age} days old on {today} (max {max_days})",
    )


def judge(
    comparison: dict,
    metrics: dict,
    drift: dict | None,
    schema: dict,
    gates_cfg: dict,
    champion: dict | None,
    model_hash: str,
    *,
    slice_names: list[str],
    confidence_level: float,
) -> dict:
    """The gate verdict for a candidate. ``comparison`` is reports/comparison.json, ``champion``
    the entry of a present champion (None before the first promotion), ``slice_names`` the
    slices params declares (each must be in the comparison)."""
    g, split = gates_cfg, gates_cfg["split"]
    comp = (comparison.get("splits") or {}).get(split) or {}
    split_metrics = metrics.get(split) or {}
    n = comp.get("n", split_metrics.get("n"))
    checks = [_min_samples(n, g["min_samples"]), *_floors(split_metrics, g["floors"])]
    if champion is not None:
        policy = "vs_champion"
        level = f"{confidence_level:.0%}"
        checks += [_vs_champion(comp.get("overall") or {}, s, level) for s in g["vs_champion"]]
        if g["slice_regression"] is not None:
            checks += _slice_regression(
                comp.get("slices") or {},
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
        split_schema = (schema.get("splits") or {}).get(split)
        checks.append(_staleness(split_schema, g["max_data_age_days"], g["as_of"]))
    return {
        "verdict": verdict(checks),
        "model_hash": model_hash,
        "champion": None
        if champion is None
        else {"version": champion.get("version"), "model_hash": champion.get("model_hash")},
        "split": split,
        "policy": policy,
        "checks": checks,
    }


def _read(path: Path, required: bool = True) -> dict | None:
    """A JSON object from ``path``; a missing required or a corrupt file is one line."""
    path = Path(path)
    if not path.exists():
        if required:
            raise DataError(f"{path}: missing; run `dvc repro` to produce it")
        return None
    try:
        obj = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def check_verdict(path: Path = GATE) -> int:
    """Exit status for CI: 0 only when the recorded verdict is pass (a required check)."""
    verdict = _read(path).get("verdict")
    for c in _read(path).get("checks", []):
        if c.get("status") != "pass":
            print(f"{c.get('status')}: {c.get('name')}: {c.get('reason')}")
    print(f"gate verdict: {verdict}")
    return 0 if verdict == "pass" else 1


def gate_reports(params: dict) -> dict:
    """Judge the candidate from the reports evaluate and drift wrote; write reports/gate.json."""
    comparison = _read(COMPARISON)
    if not isinstance(comparison.get("splits"), dict):
        raise DataError(f"{COMPARISON}: no 'splits' object; rerun `dvc repro evaluate`")
    card = _read(CANDIDATE_DIR / CARD_JSON)
    if not card.get("weights_sha256"):
        raise DataError(f"{CANDIDATE_DIR / CARD_JSON}: no weights_sha256")
    entry = _read(CHAMPION_ENTRY, required=False) or {}
    result = judge(
        comparison,
        _read(METRICS),
        _read(DRIFT_JSON, required=False),
        _read(SCHEMA),
        params["gates"],
        entry if entry.get("present") else None,
        card["weights_sha256"],
        slice_names=[s["name"] for s in params["slices"]["slices"]],
        confidence_level=params["metrics"]["confidence_level"],
    )
    write_json(GATE, result)
    return result
