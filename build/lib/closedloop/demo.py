"""`make demo`: the whole loop, offline, in a scratch clone under .demo/.

Train v1 → promote it (a local stand-in for the merged promotion PR) → serve it → replay
2014's production traffic with user feedback → export the feedback into data/ → `dvc repro`
(candidate vs champion, drift, gate, report) → write the promotion PR body → roll back.
Your working copy is never touched: everything happens in .demo/repo.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from closedloop.serving.server import spawn

NOISE = (
    "WARNING: Location",
    "💡",
    "GPU available",
    "TPU available",
    "LeafSpec",
    "HPU available",
    "To track the changes",
    "To enable auto staging",
    "dvc config core.autostage",
    "Use `dvc push`",
    "git add ",
)


class Demo:
    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        self.started = time.perf_counter()
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("DVC_EXP_NAME", None)

    def step(self, title: str) -> None:
        print(f"\n[{time.perf_counter() - self.started:6.1f}s] ▶ {title}", flush=True)

    def run(self, *cmd: str, quiet: bool = False) -> str:
        """Run a command in the scratch repo, streaming its useful lines as progress."""
        proc = subprocess.Popen(
            cmd,
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            text = line.rstrip()
            if text and not quiet and not any(n in text for n in NOISE):
                print(f"    {text}", flush=True)
        if proc.wait() != 0:
            sys.stdout.write("".join(lines[-30:]))
            raise SystemExit(f"demo: `{' '.join(cmd)}` failed (exit {proc.returncode})")
        return "".join(lines)

    def git(self, *args: str) -> str:
        return self.run("git", *args, quiet=True)


def run_demo() -> None:
    root = Path.cwd()
    work = root / ".demo" / "repo"
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(root), str(work)], check=True)
    d = Demo(root, work)
    d.git("config", "user.email", "demo@closedloop.invalid")
    d.git("config", "user.name", "closedloop demo")
    (work / "data").mkdir(exist_ok=True)

    d.step("1/8  Train v1 on 2012-01..2013-06 and judge it (dvc repro)")
    d.run("dvc", "repro")
    d.git("add", "-A")
    d.git("commit", "-qm", "demo: v1 trained")

    d.step("2/8  Promote v1: the local stand-in for a reviewed, merged promotion PR")
    d.run(sys.executable, "-m", "closedloop", "promote", "--change", "demo: promotion PR #1")
    d.git("commit", "-qam", "demo: promote v1")
    d.run("dvc", "repro", "champion")

    d.step("3/8  Serve v1 (the reference server, logging every prediction to SQLite)")
    try:
        server, url = spawn([], cwd=work, env=d.env)
    except RuntimeError as e:
        raise SystemExit(f"demo: {e}") from None
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            print(f"    {url}/healthz -> {r.read().decode()}")
        d.step("4/8  Replay 2014's production traffic; users correct what they see, later")
        d.run(
            sys.executable,
            "-m",
            "closedloop",
            "simulate",
            "--url",
            url,
            "--start",
            "2014-01-01",
            "--end",
            "2014-12-31",
            "--rate",
            "0",
            "--feedback-coverage",
            "0.9",
            "--feedback-delay",
            "0.5",
            "--snapshot",
            "artifacts/snapshot",
        )
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: the store flushes its last batch
        server.wait(timeout=30)

    d.step("5/8  Export the feedback into data/feedback/ and update data.dvc")
    d.run(sys.executable, "-m", "closedloop", "export")
    d.git("add", "data.dvc")
    d.git("commit", "-qm", "demo: new production feedback")

    d.step("6/8  Retrain and judge: candidate vs champion v1, drift, gate (dvc repro)")
    d.run("dvc", "repro")
    report = (work / "reports/benchmark.md").read_text()
    print("\n" + "\n".join(f"    │ {line}" for line in report.splitlines()))
    d.git("add", "-A")
    d.git("commit", "-qm", "demo: retrain on feedback")

    d.step("7/8  Write the promotion PR body (only a passing gate for this exact model may)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "closedloop",
            "promote",
            "--change",
            "demo: promotion PR #2",
            "--body-out",
            "reports/promotion.md",
        ],
        cwd=work,
        env=d.env,
        capture_output=True,
        text=True,
    )
    print(f"    {(proc.stdout or proc.stderr).strip()}")
    if proc.returncode == 0:
        d.git("commit", "-qam", "demo: promote v2")

    d.step("8/8  Roll back: restore the previous production entry, with history")
    if proc.returncode == 0:
        d.run(
            sys.executable,
            "-m",
            "closedloop",
            "rollback",
            "--change",
            "demo: rollback drill",
            "--body-out",
            "reports/rollback.md",
        )
    else:
        print("    (nothing was promoted, so there is nothing to roll back)")
    print(
        "\n".join(
            f"    │ {line}"
            for line in (work / "models/registry.yaml").read_text().splitlines()
            if line.startswith(("production:", "- action:", "  version:", "  previous:"))
        )
    )

    rel = work.relative_to(root)
    print(f"\nDone in {time.perf_counter() - d.started:.0f} s. The artefacts, in {rel}/:")
    for path, what in [
        (
            "reports/benchmark.md",
            "the PR comment: verdict, champion vs candidate, slices, gates, drift",
        ),
        ("reports/benchmark.html", "the same, self-contained"),
        ("reports/drift.html", "Evidently's drift report"),
        ("reports/gate.json", "the verdict and every check"),
        ("reports/errors.md", "error analysis of the candidate"),
        ("reports/promotion.md", "the promotion PR body"),
        ("reports/rollback.md", "the rollback PR body"),
        ("models/registry.yaml", "production and its history"),
        ("data/feedback/", "the exported production feedback"),
        ("feedback.db", "the server's feedback store (SQLite)"),
    ]:
        mark = "" if (work / path).exists() else "  (not produced)"
        print(f"  {rel / path!s:<40} {what}{mark}")
