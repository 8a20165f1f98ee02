"""Stage `drift`: how far the production window has moved from the champion's training data.

Reads params `drift`, `allowed_targets` and `code`, the snapshot, models/candidate/ and
models/champion/. Writes
reports/drift.html (Evidently's report) and reports/drift.json (the verdicts per column).
"""

from closedloop.config import load_params
from closedloop.errors import run_stage
from closedloop.evaluation.drift import drift
from closedloop.paths import DRIFT_HTML, DRIFT_JSON


def main() -> None:
    s = drift(load_params())
    top = ", ".join(s.top_drifted[:5]) or "none"
    print(
        f"drift: {s.drifted_count} of {s.n_columns} columns drifted "
        f"(share {s.drifted_share:.2f}; most: {top}) vs the {s.reference.source}'s "
        f"training data -> {DRIFT_JSON}, {DRIFT_HTML}"
    )


if __name__ == "__main__":
    run_stage(main, __doc__)
