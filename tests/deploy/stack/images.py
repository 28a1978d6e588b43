"""Every image the stack runs: the project's, built here, and the third-party ones, pulled or replaced.

A third-party image that cannot be pulled (Docker Hub is unreachable from these machines) is replaced
by the stand-in of docker/standins/, built from a Debian base that debootstrap makes from the apt
mirror. The builds use BuildKit; the host's extra CA certificates, if any, reach pip as a build
secret (never a layer); torch comes from PyTorch's CPU index when it answers, else from the host's
pip index (whose torch is the bigger CUDA build: said so in the output).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .common import StepFailed, command_line, run
from .engine import Engine, apt_install

REPO = Path(__file__).resolve().parents[3]
DOCKER = REPO / "docker"
STANDINS = DOCKER / "standins"
DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
PULL_TIMEOUT = 600
BUILD_TIMEOUT = 3600


@dataclass
class Images:
    tag: str
    engine: Engine
    built: list[str] = field(default_factory=list)  # removed at the end
    pulled: list[str] = field(default_factory=list)  # removed at the end (only those not there before)
    overrides: list[Path] = field(default_factory=list)  # compose files swapping in stand-ins
    seconds: dict[str, float] = field(default_factory=dict)
    ca_bundle: Path | None = None

    def exists(self, image: str) -> bool:
        return subprocess.run([self.engine.docker, "image", "inspect", image], capture_output=True,
                              env=self.engine.env).returncode == 0

    def pull(self, image: str) -> bool:
        """Pull `image` unless it is there; False when the registry cannot be reached."""
        if self.exists(image):
            return True
        result = subprocess.run([self.engine.docker, "pull", "-q", image], capture_output=True, text=True,
                                env=self.engine.env, timeout=PULL_TIMEOUT)
        if result.returncode == 0:
            self.pulled.append(image)
            return True
        print(f"cannot pull {image} ({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no reason given'}):"
              " using a local stand-in")
        return False

    def build_command(self, name: str, dockerfile: Path, context: Path, **build_args: str) -> list[str]:
        command = [self.engine.docker, "build", "--progress=plain", "-f", str(dockerfile.relative_to(REPO)), "-t", name]
        for key, value in build_args.items():
            command += ["--build-arg", f"{key}={value}"]
        if os.environ.get("PIP_INDEX_URL"):
            command += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
        if self.ca_bundle and "RUN --mount=type=secret,id=ca-certificates" in dockerfile.read_text():
            command += ["--secret", f"id=ca-certificates,src={self.ca_bundle}"]
        self.built.append(name)  # before the build: a half-built tag is removed all the same
        return [*command, str(context.relative_to(REPO)) if context != REPO else "."]

    def build(self, name: str, dockerfile: Path, context: Path, **build_args: str) -> str:
        started = time.monotonic()
        run(self.build_command(name, dockerfile, context, **build_args), env=self.engine.env, timeout=BUILD_TIMEOUT)
        self.seconds[name] = time.monotonic() - started
        return name

    def start_build(self, name: str, dockerfile: Path, context: Path, log: Path, **build_args: str) -> Background:
        """The same build in the background, its output in `log`: pip in one build and pip in another
        keep both cores busy where one alone leaves one idle."""
        command = self.build_command(name, dockerfile, context, **build_args)
        print(f"+ {command_line(command)} > {log} &", flush=True)
        with open(log, "w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=self.engine.env)
        return Background(name, process, log, time.monotonic())

    def size(self, image: str) -> int:
        result = subprocess.run([self.engine.docker, "image", "inspect", "-f", "{{.Size}}", image],
                                capture_output=True, text=True, env=self.engine.env)
        return int(result.stdout.strip()) if result.returncode == 0 else 0


@dataclass
class Background:
    name: str
    process: subprocess.Popen
    log: Path
    started: float

    def wait(self, images: Images) -> None:
        try:
            code = self.process.wait(timeout=max(1.0, BUILD_TIMEOUT - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        tail = "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-60:])
        if code != 0:
            raise StepFailed(f"building {self.name} {'timed out' if code is None else f'exited {code}'}:\n{tail}")
        images.seconds[self.name] = time.monotonic() - self.started
        print(f"built {self.name} in {images.seconds[self.name]:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def third_party_images() -> dict[str, str]:
    """The pinned third-party images docker/compose.yaml and docker/Dockerfile name."""
    compose = (DOCKER / "compose.yaml").read_text()
    dockerfile = (DOCKER / "Dockerfile").read_text()
    found = {
        "python": re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.M),
        "postgres": re.search(r"image: (postgres:\S+)", compose),
        "minio": re.search(r"image: (minio/minio:\S+)", compose),
        "mc": re.search(r"image: (minio/mc:\S+)", compose),
    }
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise StepFailed(f"cannot find the {', '.join(missing)} image in docker/compose.yaml or docker/Dockerfile")
    return {name: match[1] for name, match in found.items()}


def host_ca_bundle(workdir: Path) -> Path | None:
    """The host's extra CA certificates (a TLS-intercepting proxy's) as one PEM file, or None."""
    certificates = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    if not certificates:
        return None
    bundle = workdir / "extra-ca-certificates.pem"
    bundle.write_text("".join(path.read_text().rstrip() + "\n" for path in certificates))
    bundle.chmod(0o600)
    print(f"passing {len(certificates)} extra CA certificate(s) from /usr/local/share/ca-certificates to the builds")
    return bundle


def torch_index() -> str:
    """TORCH_INDEX_URL if set; PyTorch's CPU index if it answers; else the host's pip index."""
    if os.environ.get("TORCH_INDEX_URL"):
        return os.environ["TORCH_INDEX_URL"]
    try:
        with urllib.request.urlopen(f"{DEFAULT_TORCH_INDEX}/torch/", timeout=15):
            return DEFAULT_TORCH_INDEX
    except OSError as error:
        fallback = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
        print(f"{DEFAULT_TORCH_INDEX} unreachable ({error}): torch comes from {fallback}, whose "
              "torch==2.14.1 is the CUDA build (same code on CPU, a bigger image)")
        return fallback


def build_all(images: Images, workdir: Path) -> dict[str, str]:
    """Pull or build everything; returns the compose variables naming the images (PYTHON_IMAGE...)."""
    tag = images.tag
    upstream = third_party_images()
    images.ca_bundle = host_ca_bundle(workdir)
    have = {name: images.pull(image) for name, image in upstream.items()}

    debian = python = upstream["python"]
    if not all(have.values()):
        debian = f"attnlab-standin/debian:{tag}"
        if not Path("/usr/sbin/debootstrap").exists():
            apt_install(["debootstrap"])
        started = time.monotonic()
        images.built.append(debian)
        run([str((STANDINS / "base-image.sh").relative_to(REPO)), debian],
            env={**images.engine.env, "DOCKER": images.engine.docker})
        images.seconds[debian] = time.monotonic() - started
    if not have["python"]:
        python = images.build(f"attnlab-standin/python:{tag}", STANDINS / "Dockerfile.python", STANDINS,
                              DEBIAN_IMAGE=debian)
    index = torch_index()
    cpu = images.start_build(f"attnlab:{tag}", DOCKER / "Dockerfile", REPO, workdir / "build-attnlab.log",
                             PYTHON_IMAGE=python, TORCH_INDEX_URL=index)
    try:
        images.build(f"attnlab-mlflow:{tag}", DOCKER / "Dockerfile.mlflow", REPO, PYTHON_IMAGE=python)
        if not have["postgres"]:
            images.build(f"attnlab-standin/postgres:{tag}", STANDINS / "Dockerfile.postgres", STANDINS,
                         DEBIAN_IMAGE=debian)
            images.overrides.append(STANDINS / "compose.postgres.yaml")
        if not (have["minio"] and have["mc"]):
            images.build(f"attnlab-standin/s3:{tag}", STANDINS / "Dockerfile.s3", STANDINS, PYTHON_IMAGE=python)
            images.overrides.append(STANDINS / "compose.s3.yaml")
        cpu.wait(images)
    finally:
        cpu.stop()
    return {"PYTHON_IMAGE": python, "TORCH_INDEX_URL": index}


def remove(images: Images) -> list[str]:
    """Remove every image this test built or pulled; returns those still there."""
    names = [*reversed(images.built), *images.pulled]
    present = [name for name in names if images.exists(name)]
    if present:
        subprocess.run([images.engine.docker, "rmi", "-f", *present], capture_output=True, env=images.engine.env)
    return [name for name in present if images.exists(name)]
