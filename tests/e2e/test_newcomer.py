"""A new user's first hour: every ```bash block of the README, as written, in a fresh clone.

Each block runs in a plain shell (`bash -e`, the virtual environment NOT on PATH, as in a
new terminal), in README order, each bounded by a timeout; the test fails if any command
fails. The README marks blocks with an HTML comment on the line before them:

- ``<!-- newcomer-test: every-shell -->``: what a user types in every new shell (entering
  the environment); it runs first in each later block.
- ``<!-- newcomer-test: server -->``: a server a user leaves running in its own shell; it
  runs in the background (on a free 127.0.0.1 port, through ``CLOSEDLOOP_PORT``, which
  `make serve` and `make simulate` read) while the next block runs, then gets Ctrl-C.
- ``<!-- newcomer-test: skip: <why> -->``: not run; the reason is printed.

The clone reuses this checkout's virtual environment (a symlink; its pyproject.toml is made
older than the venv's install stamp so make does not reinstall) and its DVC cache, so the
first `make repro` is a checkout when the committed dvc.lock's outputs are there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, run

VENV = Path(sys.executable).parent.parent
# Seconds. A block that trains (the capture flow's dvc repro, dvc exp run) takes 1-2 minutes
# on an idle 2-core machine and 4-7 on one loaded by other jobs.
BLOCK_TIMEOUT = 900
MARK = re.compile(r"<!--\s*newcomer-test:\s*([a-z-]+)(?::\s*(.*?))?\s*-->")


@dataclass
class Block:
    line: int
    code: str
    kind: str  # run, every-shell, server, skip
    why: str = ""


def readme_blocks(text: str) -> list[Block]:
    """The fenced ```bash blocks, each with the directive on the line before it, if any."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start = i
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            m = MARK.search(before)
            kind, why = (m.group(1), m.group(2) or "") if m else ("run", "")
            if m and kind not in {"every-shell", "server", "skip"}:
                raise AssertionError(f"README.md:{start}: unknown newcomer-test directive {kind}")
            if kind == "skip" and not why:
                raise AssertionError(f"README.md:{start}: a skipped block must say why")
            blocks.append(Block(start + 1, "\n".join(body), kind, why))
        i += 1
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_env(port: int) -> dict:
    """A new terminal's environment: no virtual environment on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DVC_EXP_NAME")}
    venv_bin = str(VENV / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env["CLOSEDLOOP_PORT"] = str(port)
    env["COLUMNS"] = "200"  # the terminal's width: `dvc exp show` must fit it
    env.pop("PYTHONPATH", None)
    return env


def clone(dest: Path) -> Path:
    """A fresh clone of this checkout's HEAD, with the venv and the DVC cache reused."""
    head = run(["git", "rev-parse", "HEAD"], ROOT).stdout.strip()
    run(["git", "clone", "-q", str(ROOT), str(dest)], ROOT)
    run(["git", "checkout", "-q", head], dest)
    for key, value in (("user.email", "newcomer@closedloop.invalid"), ("user.name", "newcomer")):
        run(["git", "config", key, value], dest)
    (dest / ".venv").symlink_to(VENV)
    stamp = (VENV / ".closedloop-installed").stat().st_mtime
    os.utime(dest / "pyproject.toml", (stamp - 60, stamp - 60))
    run([str(VENV / "bin/dvc"), "cache", "dir", "--local", str(ROOT / ".dvc/cache")], dest)
    return dest


def shell(code: str, cwd: Path, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def wait_healthy(port: int, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited {server.returncode}:\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no server answered on 127.0.0.1:{port} within {seconds} s")


def ctrl_c(server: subprocess.Popen) -> str:
    """What a user's Ctrl-C does: SIGINT to the shell's process group; then its output."""
    os.killpg(server.pid, signal.SIGINT)
    try:
        out, _ = server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        out, _ = server.communicate()
        raise AssertionError(f"the server ignored Ctrl-C for 60 s:\n{out}") from None
    return out


def test_the_readme_blocks_marked_are_the_ones_that_cannot_run_here():
    """The directives parse, every skip says why, and the main flow is not skipped."""
    blocks = readme_blocks((ROOT / "README.md").read_text())
    run_code = "\n".join(b.code for b in blocks if b.kind in ("run", "server"))
    for command in ("make repro", "make serve", "make simulate", "make export", "dvc repro"):
        assert command in run_code, command
    for command in ("make reset-capture", "dvc exp run", "closedloop exp save", "dvc metrics"):
        assert command in run_code, command
    assert [b.kind for b in blocks].count("every-shell") == 1
    # a server in a block run to its end would never end: it must be marked server (or skip)
    for b in blocks:
        if b.kind == "run":
            assert not re.search(r"^\s*make serve\b", b.code, re.M), f"README.md:{b.line}"


@pytest.mark.timeout(2400)
def test_a_newcomer_runs_every_readme_block_as_written(tmp_path):
    project = clone(tmp_path / "closedloop")
    port = free_port()
    env = plain_env(port)
    blocks = readme_blocks((project / "README.md").read_text())
    prelude, server, log = "", None, []
    try:
        for block in blocks:
            if block.kind == "skip":
                print(f"README.md:{block.line}: skipped: {block.why}")
                continue
            if block.kind == "every-shell":
                prelude = block.code + "\n"
                # entering the environment is itself a block that must work
            code = prelude + block.code if block.kind != "every-shell" else block.code
            if block.kind == "server":
                server = shell(code, project, env, start_new_session=True)
                wait_healthy(port, server)
                continue
            started = time.monotonic()
            proc = shell(code, project, env, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:  # the whole group: a server it started too
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                raise AssertionError(
                    f"README.md:{block.line}: ran past {BLOCK_TIMEOUT} s:\n{out[-6000:]}"
                ) from None
            log.append((block, out))
            print(f"README.md:{block.line}: {time.monotonic() - started:.0f} s")
            assert proc.returncode == 0, (
                f"README.md:{block.line}: exited {proc.returncode}:\n{block.code}\n---\n"
                f"{out[-8000:]}"
            )
            if server is not None:  # the server ran in its own shell while this block ran
                ctrl_c(server)
                server = None
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.communicate()
    outputs = {b.line: out for b, out in log}
    text = "\n".join(outputs.values())
    # the capture flow ends in a verdict, not INCONCLUSIVE for too few rows
    assert re.search(r"gate verdict: (pass|fail)\b", text), text[-6000:]
    assert "production window: feedback" in text, text[-6000:]
    # the experiment survived: saved into conf/, and the last repro kept it
    assert (project / "conf/experiment/lr01.yaml").is_file()
    assert "lr: 0.01 # conf/ has 0.003" in (project / "conf/experiment/lr01.yaml").read_text()
    # without the save, a real `dvc exp apply` + `dvc repro` is refused in one line, not dropped
    undo = "git checkout -q -- conf/config.yaml && rm conf/experiment/lr01.yaml"
    run(["bash", "-c", undo], project)
    venv_dvc = str(VENV / "bin/dvc")
    run([venv_dvc, "exp", "apply", "lr01"], project)
    with (project / "conf/gates/default.yaml").open("a") as f:
        f.write("# the next edit in conf/, which used to drop the experiment silently\n")
    refused = run([venv_dvc, "repro"], project, check=False)
    errors = [ln for ln in (refused.stdout + refused.stderr).splitlines() if "error" in ln.lower()]
    assert refused.returncode != 0 and errors[0].startswith(
        "error: params.yaml: holds experiment lr01 (dvc exp run/apply)"
    ), refused.stdout + refused.stderr
    assert "model.optimizer.lr differ" in errors[0] and "closedloop exp save lr01" in errors[0]
    assert "lr: 0.01" in (project / "params.yaml").read_text()  # still the experiment's
    shown = next(out for b, out in log if "dvc exp show" in b.code)
    table = [ln for ln in shown.splitlines() if "production.accuracy" in ln]
    assert table and "…" not in table[0], f"dvc exp show does not fit 200 columns:\n{shown}"
    # quiet: none of the banners and repeated warnings a normal run used to print
    for noise in ("litlogger", "LeafSpec", "Empty DataFrame"):
        assert noise not in text, noise
    # `make data` makes data/raw/, so DVC no longer calls data/ empty on `make repro` and the
    # capture flow. Known gap: once `make reset-capture` has run `dvc add data`, DVC's
    # checkout drops the empty data/raw/ and the next `dvc exp run` warns again.
    first_two = [out for b, out in log if "make repro" in b.code or "make simulate" in b.code]
    assert len(first_two) == 2
    assert not any("'data' is empty" in out for out in first_two), first_two
    # reset-capture left no store and no exported feedback
    assert not (project / "feedback.db").exists()
    assert not (project / "data/feedback").exists()
    # `make serve PORT=... HOST=...` listens there, whatever the environment says (it once
    # ignored PORT)
    other = free_port()
    server = shell(f"make serve PORT={other} HOST=127.0.0.1", project, env, start_new_session=True)
    try:
        wait_healthy(other, server)
    finally:
        out = ctrl_c(server)
    assert f"127.0.0.1:{other}" in out, out
