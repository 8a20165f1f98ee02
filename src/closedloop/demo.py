"""`make demo`: the whole loop, offline, in a scratch clone under .demo/.

Train v1 → promote it (a local stand-in for the merged promotion PR) → serve it → replay
2014's production traffic with user feedback → export the feedback into data/ → `dvc repro`
(candidate vs champion, drift, gate, report) → try the candidate online: shadow, then a
canary that passes and ramps, then a canary of a deliberately worse model that the guardrails
stop → write the promotion PR body → roll back.
Your working copy is never touched: everything happens in .demo/repo (and .demo/rollout).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from closedloop.io import write_json
from closedloop.models.persist import load_model, read_model_config, save_model
from closedloop.paths import CANDIDATE_DIR, CARD_JSON
from closedloop.serving.server import spawn

# The demo's traffic lasts seconds, not a day: its rollout asks for fewer requests, no hours,
# and a shorter ramp, allows 2 points of error rate instead of 0.5, and leaves out the p99
# latency guardrail (showing either within the real margins takes thousands of requests per
# arm), so each step can be judged on what it sends. It also allows disagreement with v1 on
# 60% of requests instead of 30%: v1 is wrong on most of 2014's days (accuracy 0.24 on the
# feedback), so a candidate that is right where v1 is wrong disagrees on about 45% of them.
DEMO_ROLLOUT = {"shares": "[0.25, 0.5, 1.0]", "min_requests": "200", "min_hours": "0"}
DEMO_MARGINS = {"error_rate": "0.02", "disagreement": "0.6"}
LATENCY_GUARDRAIL = re.compile(r"^  - metric: latency_p99.*?(?=^  - metric:)", re.M | re.S)
REQUESTS = 1200  # per rollout step: at share 0.25, about 300 answered by the candidate

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

    def closedloop(self, *args: str, quiet: bool = False) -> str:
        return self.run(sys.executable, "-m", "closedloop", *args, quiet=quiet)

    def rollout_step(self, name: str, serve_args: list[str], expect: str) -> str:
        """Serve under the rollout params.yaml declares, send traffic with feedback, export
        the server's records and decide (--apply writes the next step into conf/rollout/).
        The story depends on each step's action (``expect``: ramp or rollback): any other
        stops the demo, saying which step went otherwise and why."""
        base = self.work.parent / "rollout" / name
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        store = f"sqlite:///{base / 'feedback.db'}"
        try:
            server, url = spawn([*serve_args, "--store-url", store], cwd=self.work, env=self.env)
        except RuntimeError as e:
            raise SystemExit(f"demo: {e}") from None
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                print(f"    /healthz rollout -> {json.dumps(json.loads(r.read())['rollout'])}")
            self.closedloop(
                "simulate", "--url", url, "--start", "2014-01-01", "--end", "2014-12-31",
                "--limit", str(REQUESTS), "--rate", "0", "--feedback-coverage", "1.0",
                "--snapshot", "artifacts/snapshot",
            )  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        self.closedloop(
            "export", "--store-url", store, "--data-dir", str(base / "data"), "--no-dvc"
        )
        out = self.closedloop("rollout", "decide", "--data-dir", str(base / "data"), "--apply")
        md = (self.work / "reports/rollout.md").read_text()
        table = [line for line in md.splitlines() if line.startswith("|")]
        print("\n".join(f"    │ {line}" for line in table))
        self.git("add", "conf", "params.yaml", "dvc.lock")
        self.git("commit", "-qm", f"demo: rollout PR after the {name} step", "--allow-empty")
        decision = json.loads((self.work / "reports/rollout.json").read_text())
        if decision["action"] != expect:
            raise SystemExit(
                f"demo: the {name} step should {expect} but decided {decision['action']} "
                f"({decision['outcome']}): {decision['reason']}"
            )
        return out


def worse_copy(src: Path, dest: Path, label: str) -> None:
    """A deliberately worse model: ``src`` with its output layer fixed on one class.

    Written as train writes a model (safetensors, config.json, a card recording the new
    weights' sha256), so the server loads it through the same hash-checked path.
    """
    config = read_model_config(src)
    model, _ = load_model(src, ["closedloop.models.", "torch.nn."])
    last = [m for m in model.modules() if hasattr(m, "weight") and m.weight.dim() == 2][-1]
    last.weight.data.zero_()
    last.bias.data.fill_(-10.0)
    last.bias.data[config["classes"].index(label)] = 10.0
    dest.mkdir(parents=True, exist_ok=True)
    digest = save_model(model, config, dest)
    card = json.loads((src / CARD_JSON).read_text())
    write_json(dest / CARD_JSON, {**card, "weights_sha256": digest})


def demo_rollout(path: Path) -> None:
    """The demo's rollout: DEMO_ROLLOUT's top-level keys, no latency guardrail, comments kept."""
    text = path.read_text()
    for key, value in DEMO_ROLLOUT.items():
        text = re.sub(rf"^{key}:[^#\n]*", f"{key}: {value} ", text, count=1, flags=re.M)
    text, found = LATENCY_GUARDRAIL.subn("", text, count=1)
    for metric, margin in DEMO_MARGINS.items():  # the margin line two lines below the metric
        pattern = rf"(^  - metric: {metric}[^\n]*\n[^\n]*\n    margin: )[0-9.]+ "
        text, changed = re.subn(pattern, rf"\g<1>{margin} ", text, count=1, flags=re.M)
        found = found and changed
    if not found:
        raise SystemExit(
            f"demo: {path}: no latency_p99, error_rate or disagreement guardrail to change"
        )
    path.write_text(text)


def rollout_story(d: Demo) -> None:
    """Steps 7-9: the candidate online: shadow, a canary that ramps, a worse canary stopped."""
    d.step("7/11 Shadow: v1 answers, the candidate runs beside it on the same requests")
    config = d.work / "conf/config.yaml"
    config.write_text(config.read_text().replace('rollout: "off"', "rollout: shadow"))
    demo_rollout(d.work / "conf/rollout/shadow.yaml")
    print(
        "    conf/rollout/shadow.yaml, for seconds of traffic: min_requests 200, min_hours 0, "
        "shares [0.25, 0.5, 1.0], error rate within 2 points, disagreement with v1 up to 60%, "
        "no p99 latency guardrail"
    )
    d.run("dvc", "repro", "-q", "compose")
    d.git("commit", "-qam", "demo: start a shadow rollout (PR)")
    d.rollout_step("shadow", [], expect="ramp")

    d.step("8/11 Canary at 25%: the candidate answers a quarter of the requests")
    d.rollout_step("canary-25", [], expect="ramp")

    d.step("9/11 A canary of a deliberately worse model (always 'drizzle'), at the share reached")
    worse = d.work.parent / "rollout" / "worse-model"
    shutil.rmtree(worse, ignore_errors=True)
    worse_copy(d.work / CANDIDATE_DIR, worse, "drizzle")
    d.rollout_step("worse-canary", ["--candidate-dir", str(worse)], expect="rollback")


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

    d.step("1/11 Train v1 on 2012-01..2013-06 and judge it (dvc repro)")
    d.run("dvc", "repro")
    d.git("add", "-A")
    d.git("commit", "-qm", "demo: v1 trained", "--allow-empty")

    d.step("2/11 Promote v1: the local stand-in for a reviewed, merged promotion PR")
    d.run(sys.executable, "-m", "closedloop", "promote", "--change", "demo: promotion PR #1")
    d.git("commit", "-qam", "demo: promote v1")
    d.run("dvc", "repro", "champion")

    d.step("3/11 Serve v1 (the reference server, logging every prediction to SQLite)")
    try:
        server, url = spawn([], cwd=work, env=d.env)
    except RuntimeError as e:
        raise SystemExit(f"demo: {e}") from None
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            print(f"    {url}/healthz -> {r.read().decode()}")
        d.step("4/11 Replay 2014's production traffic; users correct what they see, later")
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

    d.step("5/11 Export the feedback into data/feedback/ and update data.dvc")
    d.run(sys.executable, "-m", "closedloop", "export")
    d.git("add", "data.dvc")
    d.git("commit", "-qm", "demo: new production feedback")

    d.step("6/11 Retrain and judge: candidate vs champion v1, drift, gate (dvc repro)")
    d.run("dvc", "repro")
    report = (work / "reports/benchmark.md").read_text()
    print("\n" + "\n".join(f"    │ {line}" for line in report.splitlines()))
    d.git("add", "-A")
    d.git("commit", "-qm", "demo: retrain on feedback", "--allow-empty")

    rollout_story(d)

    d.step("10/11 Write the promotion PR body (only a passing gate for this exact model may)")
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

    d.step("11/11 Roll back: restore the previous production entry, with history")
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
        ("reports/rollout.md", "the last rollout decision (the worse canary's rollback)"),
        ("../rollout/", "each rollout step's store and exported records"),
        ("models/registry.yaml", "production and its history"),
        ("data/feedback/", "the exported production feedback"),
        ("feedback.db", "the server's feedback store (SQLite)"),
    ]:
        mark = "" if (work / path).exists() else "  (not produced)"
        print(f"  {rel / path!s:<40} {what}{mark}")
