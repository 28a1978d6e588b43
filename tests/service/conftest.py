"""A real `attnlab serve` in a subprocess on a free loopback port, plus tiny job configs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServiceProcess:
    """One `attnlab serve`; start() again after stop() to restart it on the same home and port."""

    home: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.home / f"serve-{self.starts}.out"

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        self.starts += 1
        env = {**os.environ, **self.env, "ATTNLAB_PORT": str(self.port)}
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.output.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"serve did not answer in {timeout} s: {self.output.read_text()[-3000:]}")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait_for(self, job_id: int, states: tuple[str, ...], timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                job = client.get(f"/jobs/{job_id}").json()
                if job["state"] in states:
                    return job
                time.sleep(0.3)
        log = (self.home / "jobs" / str(job_id) / "job.log")
        raise TimeoutError(f"job {job_id} not in {states}: {job}\n{log.read_text()[-3000:] if log.exists() else ''}")


def launch_service(home: Path, data_root: Path, **settings) -> ServiceProcess:
    """Start `attnlab serve` on `home`; keyword arguments are ATTNLAB_* settings (slots=0, ...)."""
    env = {"ATTNLAB_HOME": str(home), "ATTNLAB_TOKEN": TOKEN, "ATTNLAB_SLOTS": "1",
           "ATTNLAB_MLFLOW_UI": "false", "ATTNLAB_POLL_INTERVAL": "0.2",
           "ATTNLAB_DATA_ROOTS": str(data_root), "ATTNLAB_MLFLOW_UI_PORT": str(free_port())}
    env.update({f"ATTNLAB_{key.upper()}": str(value) for key, value in settings.items()})
    return ServiceProcess(home=home, env=env).start()


@pytest.fixture
def data_root(attnlab_home: Path) -> Path:
    root = attnlab_home / "data"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture
def start_service(attnlab_home: Path, data_root: Path):
    """Factory: start_service(slots=1, **ATTNLAB_* settings) -> a running ServiceProcess on this test's home."""
    started: list[ServiceProcess] = []

    def start(**settings) -> ServiceProcess:
        started.append(launch_service(attnlab_home, data_root, **settings))
        return started[-1]

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def queue_service(tmp_path_factory):
    """One queue-only service (slots=0: nothing trains) shared by a module's tests."""
    home = tmp_path_factory.mktemp("queue-home")
    (home / "data").mkdir()
    service = launch_service(home, home / "data", slots=0, max_request_bytes=20000)
    yield service
    service.stop()


def tiny_train_config(name: str, *, data: str = "tiny-fmnist", register_as: str | None = None,
                      max_steps: int = 2) -> dict:
    """A training run of a few steps on synthetic Fashion-MNIST-format data (see idx_data)."""
    return {
        "name": name,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": data, "batch_size": 8,
                 "num_workers": 0, "augment": False},
        "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-stage4", "reduction": 4},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "max_steps": max_steps,
                    "limit_val_batches": 1, "limit_test_batches": 1, "log_every_n_steps": 1,
                    "checkpoint_every_n_steps": 1, "enable_progress_bar": False},
        "tracking": {"experiment": "service-tests", "register_as": register_as, "figures": False},
    }


@pytest.fixture
def idx_data(data_root: Path) -> str:
    """Synthetic idx files under the data root; returns the relative root used in configs."""
    from datamodules.synthetic import write_idx_dataset

    write_idx_dataset(data_root / "tiny-fmnist", train=48, test=16)
    return "tiny-fmnist"
