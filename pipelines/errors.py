"""Stage `errors`: error analysis of the candidate on the production window.

Reads reports/eval/. Writes reports/errors.parquet (one row per misprediction, with its
failure type, time, impact and slices) and reports/errors.md. Filter them with
`closedloop errors show --help`.
"""

from closedloop.errors import run_stage
from closedloop.evaluation.error_analysis import write_errors
from closedloop.paths import ERRORS_MD, ERRORS_TABLE


def main() -> None:
    errors = write_errors()
    what = "residuals" if "residual" in errors.columns else "mispredictions"
    print(f"errors: {len(errors)} {what} -> {ERRORS_TABLE}, {ERRORS_MD}")


if __name__ == "__main__":
    run_stage(main, __doc__)
