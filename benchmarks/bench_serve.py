"""The prediction server with feedback logging on against the same server logging nothing.

Target: logging costs <= 10% of throughput, i.e. throughput ratio on/off >= 0.90. Two real
uvicorn servers on 127.0.0.1 run side by side from the same model: one commits every
prediction to a SQLite store before answering (WAL, synchronous=FULL, group commit, the
writer in its own process), the other runs with --no-logging (a no-op store). Both get the
same bounded load in interleaved rounds, alternating which goes first, from a lean keep-alive
HTTP/1.1 client (cheap per request, so the servers are what is measured). The ratio is the
median of the per-round ratios; p99 latency is over all rounds. At the end the logging
server's store must hold exactly the requests it answered.

    python benchmarks/bench_serve.py [--requests 1000] [--rounds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import result, step

from closedloop.config import load_params
from closedloop.models.nets import build_model
from closedloop.models.persist import save_model
from closedloop.serving.server import spawn

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.90


def tiny_model(dest: Path, params: dict) -> Path:
    """An untrained model with the configured architecture: inference costs what a trained one does."""
    ds = params["dataset"]
    model = build_model(
        params["model"],
        len(ds["features"]["numeric"]),
        len(ds["classes"]),
        params["allowed_targets"],
    )
    config = {
        "model": params["model"],
        "features": ds["features"]["numeric"],
        "classes": ds["classes"],
        "target": ds["target"],
        "time_column": ds["time_column"],
    }
    save_model(model, config, dest)
    return dest


def start_server(model_dir: Path, store_url: str, logging_on: bool) -> tuple:
    args = ["--model-dir", str(model_dir)]
    args += ["--store-url", store_url] if logging_on else ["--no-logging"]
    try:
        return spawn(args, cwd=ROOT)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def request_bytes(port: int, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def load(
    port: int, bodies: list[bytes], n: int, concurrency: int
) -> tuple[float, list[float]]:
    """Send n requests over ``concurrency`` keep-alive connections; throughput and latencies."""
    counter = iter(range(n))
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in counter:
            t0 = time.perf_counter()
            writer.write(bodies[i % len(bodies)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if status != b"200":
                raise SystemExit(f"request failed: HTTP {status.decode()}")
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return n / (time.perf_counter() - start), latencies


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU of a process and of its children (the store's writer), from Linux's
    /proc; (0.0, 0.0) elsewhere."""
    own = children = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(stat.parent.name) == pid:
            own += seconds
        elif int(fields[1]) == pid:
            children += seconds
    return own, children


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000, help="requests per round and mode")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    features = params["dataset"]["features"]["numeric"]
    payloads = [
        {"features": {f: float((i * 7 + j) % 13) for j, f in enumerate(features)}}
        for i in range(64)
    ]
    rps: dict[str, list[float]] = {"on": [], "off": []}
    lat: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny_model(Path(tmp) / "model", params)
        store = Path(tmp) / "feedback.db"
        step("starting two servers: one logging to SQLite, one logging nothing")
        started = {
            m: start_server(model_dir, f"sqlite:///{store}", m == "on") for m in ("on", "off")
        }
        servers = {m: proc for m, (proc, _) in started.items()}
        ports = {m: int(url.rsplit(":", 1)[1]) for m, (_, url) in started.items()}
        try:
            bodies = {m: [request_bytes(p, b) for b in payloads] for m, p in ports.items()}
            for mode, port in ports.items():  # warm-up: first connections, caches, the WAL file
                asyncio.run(load(port, bodies[mode], args.requests, args.concurrency))
            cpu = {m: cpu_seconds(p.pid) for m, p in servers.items()}
            for i in range(args.rounds):  # interleaved, alternating order: drift hits both
                step(f"round {i + 1}/{args.rounds}: {args.requests:,} requests to each server")
                for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    r, latencies = asyncio.run(
                        load(ports[mode], bodies[mode], args.requests, args.concurrency)
                    )
                    rps[mode].append(r)
                    lat[mode].extend(latencies)
            per_request = 1e6 / (args.rounds * args.requests)  # microseconds
            cpu = {
                m: [(b - a) * per_request for a, b in zip(cpu[m], cpu_seconds(p.pid), strict=True)]
                for m, p in servers.items()
            }
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(30)
        with sqlite3.connect(store) as db:
            stored = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
    expected = args.requests * (args.rounds + 1)
    assert stored == expected, f"the logging server stored {stored} of {expected} predictions"
    ratio = statistics.median(on / off for on, off in zip(rps["on"], rps["off"], strict=True))
    print(
        f"  {args.rounds}x{args.requests:,} requests each, concurrency {args.concurrency}, "
        f"{stored:,} committed; p99 {p99(lat['on']):.1f}ms logging vs {p99(lat['off']):.1f}ms "
        f"not; CPU per request: the server {cpu['on'][0]:.0f} us logging vs {cpu['off'][0]:.0f} us "
        f"not, the store's writer process {cpu['on'][1]:.0f} us"
    )
    result(
        "serving: throughput, logging on vs off",
        f"{statistics.median(rps['on']):.0f} req/s",
        f"{statistics.median(rps['off']):.0f} req/s",
        ratio,
        TARGET,
        ">=",
    )


if __name__ == "__main__":
    main()
