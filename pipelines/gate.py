"""Stage `gate`: the verdict on the candidate, from the gates declared in conf/gates/.

Reads params `gates`, `slices` and `metrics.confidence_level`, and the reports of evaluate
and drift. Writes reports/gate.json. It exits 0 on any verdict so the report still renders;
`closedloop gate check` is the command that fails CI unless the verdict is pass.
"""

from closedloop.config import load_params
from closedloop.errors import run_stage
from closedloop.gating.gate import gate_reports
from closedloop.paths import GATE


def main() -> None:
    result = gate_reports(load_params())
    counts = {s: sum(c.status == s for c in result.checks) for s in ("fail", "inconclusive")}
    print(
        f"gate: {result.verdict.upper()} ({len(result.checks)} checks, {counts['fail']} "
        f"failed, {counts['inconclusive']} inconclusive; {result.policy}) -> {GATE}"
    )
    for c in result.checks:
        if c.name == "min_samples" and c.status == "inconclusive":
            print(too_few_rows(result.split, c.value, c.threshold))


def too_few_rows(split: str, n, needed) -> str:
    """Inconclusive for want of rows, said as what it means and what to do."""
    return (
        f"gate: inconclusive: the {split} split has {n:g} examples and the gates need "
        f"{needed:g} (gates.min_samples); with more labelled feedback (`closedloop simulate "
        "--feedback-coverage`, or more traffic) `make export` and `dvc repro` can judge"
    )


if __name__ == "__main__":
    run_stage(main, __doc__)
