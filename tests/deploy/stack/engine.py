"""The container engine for the stack test: find one, or install Debian's and start it privately.

An engine that already answers is used as it is (the test then removes only what it created). Else
Debian's `docker.io` (engine 20.10) and `docker-compose` (1.29) are installed when missing and a
`dockerd` is started with its own data root in a temporary folder: overlay2 where the kernel allows
it, else vfs (which copies every layer, so it needs several times the disk). Stopping that engine
deletes its data root, so the disk is left as it was found.

The docker CLI must build with BuildKit: Debian's 20.10 CLI has it built in; a newer CLI (23+) needs
the buildx plugin, and refuses `DOCKER_BUILDKIT=1` without it, so such a CLI is skipped when Debian's
is there (these machines have a client-only 28.x in /usr/local/bin that shadows it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import StepFailed, command_line, run

DEBIAN_CLI = "/usr/bin/docker"  # docker.io's 20.10 CLI
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


@dataclass
class Engine:
    docker: str  # a CLI that builds with BuildKit
    compose: list[str]  # `docker-compose` (1.x) or `docker compose` (v2)
    storage_driver: str
    data_root: Path  # where images and volumes live (free space is checked against it)
    process: subprocess.Popen | None = None  # the dockerd this test started, if any
    private_root: Path | None = None  # its data root and log, deleted when it stops
    env: dict[str, str] = field(default_factory=dict)  # environment for docker and compose commands

    @property
    def started_here(self) -> bool:
        return self.process is not None


def ensure_engine() -> Engine:
    """An engine that answers, with a BuildKit-capable CLI and compose; installs and starts one if needed."""
    install = [package for package, binary in (("docker.io", "dockerd"), ("docker-compose", "docker-compose"))
               if not _installed(binary)]
    if install:
        apt_install(install)
    docker = buildkit_cli()
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "COMPOSE_DOCKER_CLI_BUILD": "1", "COMPOSE_HTTP_TIMEOUT": "600",
           # compose 1.x shells out to `docker` for CLI builds: give it the same CLI.
           "PATH": os.pathsep.join([str(Path(docker).parent), os.environ.get("PATH", "")])}
    compose = ["docker-compose"] if shutil.which("docker-compose") else [docker, "compose"]
    info = _info(docker, env)
    if info is not None:
        print(f"using the running engine ({info['driver']}, data in {info['root']})")
        return Engine(docker, compose, info["driver"], Path(info["root"]), env=env)
    return _start_private_engine(docker, compose, env)


def apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StepFailed(f"{', '.join(packages)} missing: install them (sudo apt-get install -y {' '.join(packages)})"
                         " or run as root on Debian")
    command = ["apt-get", "install", "-y", "-q", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"+ {command_line(command)}")
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        run(["apt-get", "update", "-q"], env=env, quiet=True)
        run(command, env=env, quiet=True)


def buildkit_cli() -> str:
    candidates = [path for path in (shutil.which("docker"), DEBIAN_CLI) if path and os.access(path, os.X_OK)]
    for path in dict.fromkeys(candidates):
        version = subprocess.run([path, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        major = version.stdout.strip().split(".")[0]
        if major.isdigit() and int(major) < 23:
            return path
        if subprocess.run([path, "buildx", "version"], capture_output=True).returncode == 0:
            return path
    raise StepFailed(f"no docker CLI here builds with BuildKit ({', '.join(candidates) or 'none found'}): install "
                     "Debian's docker.io (its 20.10 CLI has BuildKit built in) or the docker buildx plugin")


def stop_engine(engine: Engine) -> list[str]:
    """Stop the dockerd this test started and delete its data root; returns what could not be removed."""
    if engine.process is None:
        return []
    if engine.process.poll() is None:
        engine.process.send_signal(signal.SIGTERM)
        try:
            engine.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(engine.process)
    assert engine.private_root is not None
    # --one-file-system: should dockerd leave a mount behind, never delete through it.
    subprocess.run(["rm", "-rf", "--one-file-system", str(engine.private_root)], capture_output=True)
    return [str(engine.private_root)] if engine.private_root.exists() else []


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL dockerd and the containerd it started (its own session, so its own process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _installed(binary: str) -> bool:
    return shutil.which(binary) is not None or Path("/usr/sbin", binary).exists() or Path("/usr/bin", binary).exists()


def _info(docker: str, env: dict[str, str]) -> dict[str, str] | None:
    result = subprocess.run([docker, "info", "--format", "{{.Driver}} {{.DockerRootDir}}"],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return None
    driver, _, root = result.stdout.strip().partition(" ")
    return {"driver": driver, "root": root}


def _start_private_engine(docker: str, compose: list[str], env: dict[str, str]) -> Engine:
    if os.geteuid() != 0:
        raise StepFailed("no container engine answers and starting dockerd needs root: start one (sudo dockerd &)")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    root = Path(tempfile.mkdtemp(prefix="attnlab-stack-engine-", dir="/var/tmp"))
    for driver in ("overlay2", "vfs"):
        data_root = root / "data"
        shutil.rmtree(data_root, ignore_errors=True)
        log_path = root / f"dockerd-{driver}.log"
        command = [dockerd, f"--data-root={data_root}", f"--pidfile={root / 'dockerd.pid'}", f"--storage-driver={driver}"]
        print(f"+ {command_line(command)} &")
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _info(docker, env) is not None:
                if driver == "vfs":
                    print("overlay2 is not available here: vfs copies every image layer, expect several times the disk use")
                return Engine(docker, compose, driver, data_root, process, root, env)
            time.sleep(0.5)
        _kill_group(process)
        print(f"dockerd with {driver} did not start:\n{log_path.read_text()[-1500:]}")
    shutil.rmtree(root, ignore_errors=True)
    raise StepFailed("dockerd started with neither overlay2 nor vfs (logs above)")
