"""Submit latency of the attnlab service under 20 concurrent clients on loopback.

Starts `attnlab serve` (queue only: slots=0, so nothing trains) in a fresh home, sends 1,000
training-job submissions from 20 concurrent HTTP clients, and checks that every one was stored.
Bar: p99 < 100 ms and zero lost submissions. Prints the figures and PASS/FAIL; exit code 1 on FAIL.

    .venv/bin/python benchmarks/bench_service.py [--requests 1000] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from machine import describe

TOKEN = "bench-token"
P99_BAR_MS = 100.0


def config(name: str) -> dict:
    return {"name": name,
            "data": {"kind": "image", "dataset": "fashion_mnist", "batch_size": 64},
            "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-all", "reduction": 16},
            "trainer": {"accelerator": "cpu", "max_epochs": 1},
            "tracking": {"experiment": "bench", "register_as": "bench-se"}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all the process's threads: each is a thread put to
    sleep or woken, i.e. cross-thread traffic (GIL hand-overs, wake-ups) that costs more on some machines."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        # "voluntary_ctxt_switches:" and "nonvoluntary_ctxt_switches:" lines
        total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return total


def start_service(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "ATTNLAB_HOME": str(home), "ATTNLAB_TOKEN": TOKEN, "ATTNLAB_SLOTS": "0",
           "ATTNLAB_MLFLOW_UI": "false", "ATTNLAB_PORT": str(port)}
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, cwd=root,
                               stdout=open(home / "serve.out", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited:\n{(home / 'serve.out').read_text()[-2000:]}")
        try:
            # Steady state is measured: wait until the model checker and tracking store are warm.
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("warmed_up"):
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("serve did not start in 120 s")


class Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator shares two cores with the server,
    so it spends as little CPU per request as it can (httpx costs about as much as the server)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                          + payload)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_clients(port: int, requests: int, clients: int) -> tuple[list[float], list[int], int]:
    latencies: list[float] = []
    ids: list[int] = []
    failures = 0
    counter = iter(range(requests))

    async def client() -> None:
        nonlocal failures
        connection = Connection(port)
        try:
            for index in counter:
                body = {"config": config(f"bench-{index}"), "idempotency_key": f"bench-{index}"}
                started = time.perf_counter()
                status, answer = await connection.post("/jobs", body)
                latencies.append(time.perf_counter() - started)
                if status == 201:
                    ids.append(answer["id"])
                else:
                    failures += 1
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, ids, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="attnlab-bench-") as folder:
        home, port = Path(folder), free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_service(home, port)
        try:
            # Warm-up (connections, the validation cache, SQLite pages); not counted, not in the bar.
            for index in range(20):
                httpx.post(f"{url}/jobs", json={"config": config(f"warm-{index}")},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).raise_for_status()
            cpu_before, switches_before = process_cpu_seconds(process.pid), context_switches(process.pid)
            started = time.perf_counter()
            latencies, ids, failures = asyncio.run(run_clients(port, args.requests, args.clients))
            elapsed = time.perf_counter() - started
            server_cpu = process_cpu_seconds(process.pid) - cpu_before
            switches = context_switches(process.pid) - switches_before
            stored = httpx.get(f"{url}/jobs", params={"name": "bench-", "limit": 1}, timeout=60,
                               headers={"Authorization": f"Bearer {TOKEN}"}).json()["total"]
        finally:
            process.terminate()
            process.wait(timeout=30)

    milliseconds = sorted(latency * 1000 for latency in latencies)
    p50 = statistics.median(milliseconds)
    p90 = milliseconds[int(0.90 * (len(milliseconds) - 1))]
    p99 = milliseconds[int(0.99 * (len(milliseconds) - 1))]
    lost = args.requests - len(set(ids))
    print(f"attnlab service submit latency: {args.requests} submissions, {args.clients} concurrent clients, "
          f"loopback, slots=0 (queue only)")
    print(f"  machine: {describe()}")
    print(f"  p50 {p50:.1f} ms   p90 {p90:.1f} ms   p99 {p99:.1f} ms   max {milliseconds[-1]:.1f} ms")
    print(f"  server CPU {server_cpu / args.requests * 1000:.2f} ms per submission (load-independent cost); "
          f"{switches / args.requests:.2f} context switches per submission (thread wake-ups)")
    print(f"  throughput {args.requests / elapsed:.0f} submissions/s; non-201 answers {failures}; "
          f"stored {stored}; lost {lost}")
    passed = p99 < P99_BAR_MS and lost == 0 and failures == 0 and stored == args.requests
    print(f"{'PASS' if passed else 'FAIL'}: p99 {p99:.1f} ms (bar < {P99_BAR_MS:.0f} ms), lost {lost} (bar 0)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
