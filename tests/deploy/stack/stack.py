"""The compose stack under test: its environment file, `up`, health, and `down`.

The environment file is docker/env.example's variables with fresh secrets, free host ports, the
test's image tag and one CPU per Ray node (so a 2-worker run must use both containers). Datasets
come from ATTNLAB_DATA_DIR (default /usr/share/datasets, where Debian's dataset-fashion-mnist lives).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .common import StepFailed, get_json, run, wait_for
from .engine import Engine
from .images import DOCKER, REPO

# Every service with a health check, in the order compose starts them; minio-init runs once.
HEALTHY = ["postgres", "minio", "mlflow", "ray-head", "ray-worker-cpu", "attnlab"]
ONE_SHOT = ["minio-init"]
HEALTH_TIMEOUT = 600.0


@dataclass
class Stack:
    engine: Engine
    project: str
    env_file: Path
    files: list[Path]
    values: dict[str, str]

    def compose(self, *arguments: str) -> list[str]:
        command = [*self.engine.compose, "-p", self.project, "--env-file", str(self.env_file)]
        for path in self.files:
            command += ["-f", str(path.relative_to(REPO))]
        return [*command, "--profile", "cpu", *arguments]

    def url(self, port_variable: str) -> str:
        return f"http://127.0.0.1:{self.values[port_variable]}"

    def container(self, service: str) -> str:
        # Polled every few seconds, so the docker CLI (compose 1.x starts a Python interpreter per call),
        # by the labels both compose versions set; not echoed like the commands a user would type.
        labels = [f"label=com.docker.compose.project={self.project}", f"label=com.docker.compose.service={service}"]
        command = [self.engine.docker, "ps", "-aq", "--filter", labels[0], "--filter", labels[1]]
        ids = subprocess.run(command, capture_output=True, text=True, env=self.engine.env).stdout.split()
        if not ids:
            raise StepFailed(f"no container for service {service}")
        return ids[0]

    def inspect(self, service: str) -> dict:
        output = subprocess.run([self.engine.docker, "inspect", self.container(service)], capture_output=True,
                                text=True, env=self.engine.env).stdout
        return json.loads(output)[0]

    def logs(self, service: str, lines: int = 60) -> str:
        result = subprocess.run(self.compose("logs", "--no-color", "--tail", str(lines), service), capture_output=True,
                                text=True, env=self.engine.env)
        return result.stdout + result.stderr

    def exec(self, service: str, *command: str) -> str:
        return run(self.compose("exec", "-T", service, *command), env=self.engine.env, quiet=True)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def write_env(workdir: Path, tag: str, build_values: dict[str, str]) -> dict[str, str]:
    values = {}
    for line in (DOCKER / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    for key, value in values.items():
        if value.startswith("change-me"):
            values[key] = secrets.token_urlsafe(24)
    ports = free_ports(4)
    data_dir = Path(os.environ.get("ATTNLAB_DATA_DIR", "/usr/share/datasets")).resolve()
    if not (data_dir / "fashion-mnist").is_dir():
        raise StepFailed(f"{data_dir}/fashion-mnist missing: `make fashion-mnist` installs Debian's dataset-fashion-mnist")
    values.update(build_values)
    values.update({
        "ATTNLAB_VERSION": tag,
        "ATTNLAB_DATA_DIR": str(data_dir),
        "ATTNLAB_HOST_PORT": str(ports[0]), "MLFLOW_PORT": str(ports[1]),
        "RAY_DASHBOARD_PORT": str(ports[2]), "MINIO_CONSOLE_PORT": str(ports[3]),
        # One CPU per node: a 2-worker run cannot fit on one container. A small object store: the
        # machine is shared, and training passes no large objects through it.
        "RAY_HEAD_START_ARGS": "--num-gpus=0 --num-cpus=1 --object-store-memory=268435456",
        "RAY_WORKER_START_ARGS": "--num-cpus=1 --object-store-memory=268435456",
        "RAY_SHM_SIZE": "512mb",
    })
    env_file = workdir / "stack.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    env_file.chmod(0o600)
    return values


def up(stack: Stack) -> None:
    """`up -d`, then every service healthy, minio-init done, and both Ray nodes alive."""
    try:
        run(stack.compose("up", "-d", "--no-build"), env=stack.engine.env)
    except StepFailed as error:
        raise StepFailed(f"{error}\n{status_report(stack)}") from error
    for service in HEALTHY:
        wait_healthy(stack, service)
    for service in ONE_SHOT:
        state = stack.inspect(service)["State"]
        if state["Status"] != "exited" or state["ExitCode"] != 0:
            raise StepFailed(f"{service} did not complete ({state['Status']}, exit {state['ExitCode']}):\n"
                             f"{stack.logs(service)}")
    wait_for("both Ray nodes alive", lambda: alive_ray_nodes(stack) == 2 or None, timeout=120)


def wait_healthy(stack: Stack, service: str, timeout: float = HEALTH_TIMEOUT) -> float:
    started = time.monotonic()

    def healthy() -> bool | None:
        state = stack.inspect(service)["State"]
        health = state.get("Health", {}).get("Status")
        if health == "unhealthy" or state["Status"] in ("exited", "dead"):
            raise StepFailed(f"{service} is {health or state['Status']}:\n{stack.logs(service)}")
        return health == "healthy" or None

    try:
        wait_for(f"{service} healthy", healthy, timeout=timeout)
    except StepFailed as error:
        raise StepFailed(f"{error}\n{stack.logs(service)}") from error
    return time.monotonic() - started


def alive_ray_nodes(stack: Stack) -> int:
    summary = get_json(f"{stack.url('RAY_DASHBOARD_PORT')}/nodes?view=summary",
                       token=stack.values["RAY_AUTH_TOKEN"])["data"]["summary"]
    return sum(1 for node in summary if node["raylet"]["state"] == "ALIVE")


def status_report(stack: Stack) -> str:
    result = subprocess.run(stack.compose("ps"), capture_output=True, text=True, env=stack.engine.env)
    return result.stdout + result.stderr


def down(stack: Stack) -> list[str]:
    """Remove the stack's containers, networks and volumes; returns volumes still there."""
    subprocess.run(stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20"), capture_output=True,
                   env=stack.engine.env)
    left = subprocess.run([stack.engine.docker, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}"],
                          capture_output=True, text=True, env=stack.engine.env).stdout.split()
    return left
