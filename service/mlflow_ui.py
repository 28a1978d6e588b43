"""The MLflow web UI on the embedded store: `mlflow server` as a child process of `attnlab serve`.

Started only when no external tracking server is configured, with one worker and without MLflow's
job queue (see `environment`). Its first start migrates the SQLite store and takes ~20 s on two
cores, so readiness is polled (GET /health), never assumed after a fixed sleep. The child gets
SIGTERM if the service dies (PR_SET_PDEATHSIG), so it never outlives us.
The MLflow UI has no login: it listens on loopback (ATTNLAB_MLFLOW_UI_HOST) even when the API is
served on every interface; widening it is said loudly at start (docs/deployment.md: put an
authenticating proxy in front, as the compose stack does).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from service.settings import Settings

PR_SET_PDEATHSIG = 1


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """`preferred` if it can be bound now, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free port")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _reachable(host: str) -> str:
    """An address a browser on this machine can open for a bind address (0.0.0.0 -> 127.0.0.1)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class MlflowUI:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.host = settings.mlflow_ui_host
        self.port = free_port(settings.mlflow_ui_port, self.host)
        self.url = f"http://{_reachable(self.host)}:{self.port}"
        self.log_path: Path = settings.home / "mlflow-ui.log"
        self.ready = threading.Event()
        self._process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        uri = self.settings.tracking_uri
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--registry-store-uri", uri,
                "--default-artifact-root", (self.settings.home / "mlartifacts").as_uri(),
                "--host", self.host, "--port", str(self.port), "--workers", "1"]

    def exposure_warning(self) -> str | None:
        """A warning when the UI (which has no login) listens beyond loopback."""
        if is_loopback(self.host):
            return None
        return (f"warning: the MLflow UI listens on {self.host}:{self.port} without authentication: anyone who "
                "reaches it can read and change every run and model. Put an authenticating proxy in front "
                "(docs/deployment.md) or set ATTNLAB_MLFLOW_UI_HOST=127.0.0.1")

    @staticmethod
    def environment() -> dict[str, str]:
        """MLflow 3.17's server also starts a job queue (a job runner and seven huey consumers, for
        GenAI evaluation jobs): ~1.8 GB and a little CPU when idle, and attnlab never submits such
        a job. MLflow's own switch turns it off; the UI and the tracking/registry API are unchanged."""
        return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}  # set it to true to have them

    def start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self.command(), env=self.environment(), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent)

    def wait_ready(self, timeout: float = 180.0) -> bool:
        """Poll the UI's /health until it answers; False if it exited or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.ready.set()
                        return True
            except OSError:
                pass
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
