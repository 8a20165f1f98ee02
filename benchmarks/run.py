"""`make bench`: run every benchmarks/bench_*.py, then one table of what they found.

Each benchmark prints what it is measuring as it goes and one line per target. The table at
the end has a row per result: ours, the baseline measured in the same run, the ratio, the
target and OK or MISSED (or "reported" for a ratio with no target). Exit status 1 when a
target is missed or a benchmark fails.

    python benchmarks/run.py [NAME ...]     # e.g. training drift (default: all)
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import RESULTS_ENV  # noqa: E402


def summary(path: Path) -> str:
    """The first line of a benchmark's docstring: what it compares."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else path.name


def table(rows: list[dict]) -> str:
    head = ["benchmark", "ours", "baseline", "ratio", "target", "result"]
    cells = [
        [r["benchmark"], r["ours"], r["baseline"], r["ratio"], r["target"], r["result"]]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, cells)])


def main() -> int:
    names = sys.argv[1:]
    benches = sorted(HERE.glob("bench_*.py"))
    if names:
        benches = [b for b in benches if b.stem.removeprefix("bench_") in names]
        if not benches:
            print(f"bench: no benchmark named {', '.join(names)}", file=sys.stderr)
            return 2
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, bench in enumerate(benches, 1):
            print(f"[{i}/{len(benches)}] {bench.name}: {summary(bench)}", flush=True)
            results = Path(tmp) / f"{bench.stem}.jsonl"
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, str(bench)], env={**os.environ, RESULTS_ENV: str(results)}
            )
            seconds = time.perf_counter() - start
            found = (
                [json.loads(x) for x in results.read_text().splitlines()]
                if results.exists()
                else []
            )
            rows += found
            if proc.returncode != 0 or not found:
                why = f"exit status {proc.returncode}" if proc.returncode else "no result"
                rows.append(
                    {
                        "benchmark": bench.stem,
                        "ours": "-",
                        "baseline": "-",
                        "ratio": "-",
                        "target": "-",
                        "result": f"FAILED ({why})",
                    }
                )
            print(f"    ({seconds:.0f}s)\n", flush=True)
    print(table(rows))
    gated = [r for r in rows if r["result"] != "reported"]
    missed = [r["benchmark"] for r in gated if r["result"] != "OK"]
    if missed:
        print(
            f"\nbench: {len(missed)} of {len(gated)} targets missed or failed: {'; '.join(missed)}"
        )
        return 1
    print(
        f"\nbench: all {len(gated)} targets met" if gated else "\nbench: nothing gated in this run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
