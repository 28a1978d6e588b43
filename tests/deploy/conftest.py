"""A two-node Ray cluster on one machine, started the way docker/compose.yaml starts one.

Two `ray start --block` processes (head with the dashboard, so the Jobs API answers, plus one worker),
each with 1 CPU, its own temp dir and its own free ports, and token auth on. Nodes advertise
127.0.0.2: Ray swaps 127.0.0.1 for the machine's outward address, and all traffic stays on loopback. Private temp dirs keep
other Ray sessions on this machine from finding this cluster (and this cluster from finding them);
teardown signals only the processes these two started, never `ray stop`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
import psutil  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
STARTUP_TIMEOUT = 90.0


@dataclass
class RayCluster:
    dashboard_url: str  # the Jobs API address, e.g. http://127.0.0.1:8265
    gcs_address: str
    token: str
    processes: list[subprocess.Popen]
    temp_dirs: list[Path]
    log_dir: Path
    agent_ports: list[int]  # each node's dashboard agent (serves /api/local_raylet_healthz)

    def alive_nodes(self) -> int:
        request = urllib.request.Request(
            f"{self.dashboard_url}/nodes?view=summary", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            summary = json.load(response)["data"]["summary"]
        return sum(1 for node in summary if node["raylet"]["state"] == "ALIVE")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _node_ports() -> tuple[list[str], int]:
    manager, objects, agent, agent_grpc, runtime_env, metrics = _free_ports(6)
    # Ray needs a range of at least a few ports for its worker processes; take 30 above a free one.
    first_worker = _free_ports(1)[0]
    return [
        f"--node-manager-port={manager}",
        f"--object-manager-port={objects}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--min-worker-port={first_worker}",
        f"--max-worker-port={first_worker + 30}",
    ], agent


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each `ray start` and everything it spawned, then SIGKILL what is left."""
    family: list[psutil.Process] = []
    for process in processes:
        try:
            parent = psutil.Process(process.pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for member in family:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=5)  # a head drains for 30 s otherwise
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def _wait_until(predicate, what: str, processes: list[subprocess.Popen], log_dir: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            break
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    logs = "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(log_dir.glob("*.log")))
    raise RuntimeError(f"Ray cluster did not come up ({what}):\n{logs}")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> RayCluster:
    """Head (1 CPU, dashboard) + worker (1 CPU) as two processes; resource `node_<i>` names each."""
    token = secrets.token_hex(16)
    log_dir = tmp_path_factory.mktemp("ray-cluster-logs")
    # Unix socket paths must stay under ~107 characters: short temp dirs right under /tmp.
    temp_dirs = [Path(tempfile.mkdtemp(prefix="alr", dir="/tmp")) for _ in range(2)]
    env = {
        # A RAY_ADDRESS left by another test must not point these nodes (or their jobs) elsewhere.
        **{key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"},
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_TMPDIR": str(temp_dirs[0]),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Jobs run from Ray's working dir: make the repo importable and the venv's `attnlab` findable.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    gcs_port, dashboard_port, client_port = _free_ports(3)
    common = ["--block", "--disable-usage-stats", "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.2",
              f"--object-store-memory={100 * 1024 * 1024}"]
    head_ports, head_agent = _node_ports()
    worker_ports, worker_agent = _node_ports()
    head = [RAY, "start", "--head", f"--port={gcs_port}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={client_port}", f"--temp-dir={temp_dirs[0]}",
            '--resources={"node_0": 1}', *common, *head_ports]
    worker = [RAY, "start", f"--address=127.0.0.2:{gcs_port}", f"--temp-dir={temp_dirs[1]}",
              '--resources={"node_1": 1}', *common, *worker_ports]
    processes: list[subprocess.Popen] = []
    cluster = RayCluster(f"http://127.0.0.1:{dashboard_port}", f"127.0.0.2:{gcs_port}", token, processes, temp_dirs, log_dir,
                         [head_agent, worker_agent])
    try:
        for index, command in enumerate([head, worker]):
            log = open(log_dir / f"ray-start-{index}.log", "w")
            processes.append(
                subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            if index == 0:
                _wait_until(lambda: cluster.alive_nodes() >= 1, "head", processes, log_dir)
        _wait_until(lambda: cluster.alive_nodes() >= 2, "worker joins", processes, log_dir)
        yield cluster
    finally:
        _stop(processes)
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
