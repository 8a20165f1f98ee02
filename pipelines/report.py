"""Stage `report`: the benchmark report, the body of the pull-request comment.

Reads the gate verdict, the comparison, drift, the snapshot's lineage and both model cards.
Writes reports/benchmark.md (kept under GitHub's comment limit) and reports/benchmark.html.
"""

from closedloop.config import load_params
from closedloop.errors import run_stage
from closedloop.paths import BENCHMARK_HTML, BENCHMARK_MD
from closedloop.reporting.report import write_report


def main() -> None:
    level = f"{load_params()['metrics']['confidence_level']:.0%}"
    md = write_report(level)
    print(f"report: {len(md):,} characters -> {BENCHMARK_MD} (and {BENCHMARK_HTML})")


if __name__ == "__main__":
    run_stage(main, __doc__)
