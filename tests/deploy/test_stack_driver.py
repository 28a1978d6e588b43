"""The parts of `make test-stack` (tests/deploy/stack/) that need no engine, checked in seconds, so
that a drifted config or file name fails here rather than 20 minutes into the stack run."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import yaml

from service.configs import prepare_config
from service.settings import Settings
from tests.deploy.dockerfiles import DOCKER
from tests.deploy.stack import images, stack
from tests.deploy.stack.checks import training_config
from tests.deploy.stack.common import StepFailed, wait_for
from tests.deploy.stack.engine import buildkit_cli
from training.config import validate_config


def test_third_party_images_are_the_pinned_ones_compose_names():
    found = images.third_party_images()
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    assert found["postgres"] == services["postgres"]["image"]
    assert found["minio"] == services["minio"]["image"] and found["mc"] == services["minio-init"]["image"]
    assert found["python"] == "python:3.11.14-slim-bookworm"


def test_env_file_has_fresh_secrets_free_ports_and_one_cpu_per_ray_node(tmp_path, monkeypatch):
    data = tmp_path / "datasets"
    (data / "fashion-mnist").mkdir(parents=True)
    monkeypatch.setenv("ATTNLAB_DATA_DIR", str(data))
    values = stack.write_env(tmp_path, "0.1.0-stacktest", {"PYTHON_IMAGE": "local/python:x"})
    example = {line.partition("=")[0] for line in (DOCKER / "env.example").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert example <= set(values)
    assert not [key for key, value in values.items() if value.startswith("change-me")]
    assert values["ATTNLAB_TOKEN"] != stack.write_env(tmp_path, "t", {})["ATTNLAB_TOKEN"], "secrets are fresh per run"
    ports = [int(values[key]) for key in ("ATTNLAB_HOST_PORT", "MLFLOW_PORT", "RAY_DASHBOARD_PORT", "MINIO_CONSOLE_PORT")]
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free now
    assert "--num-cpus=1" in values["RAY_HEAD_START_ARGS"] and "--num-cpus=1" in values["RAY_WORKER_START_ARGS"]
    assert values["PYTHON_IMAGE"] == "local/python:x" and values["ATTNLAB_VERSION"] == "0.1.0-stacktest"
    env_file = tmp_path / "stack.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"ATTNLAB_DATA_DIR={data}\n" in env_file.read_text()


def test_env_file_refuses_a_data_dir_without_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(StepFailed, match="fashion-mnist missing"):
        stack.write_env(tmp_path, "t", {})


def test_training_job_is_valid_for_the_service_in_compose_and_needs_both_ray_nodes():
    config = training_config()
    validate_config(config)  # the schema the service validates submissions with
    environment = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["attnlab"]["environment"]
    settings = Settings(_env_file=None, home=Path("/shared/attnlab"), data_roots=environment["ATTNLAB_DATA_ROOTS"],
                        output_root=environment["ATTNLAB_OUTPUT_ROOT"])
    assert prepare_config(config, settings)["data"]["root"] == "/shared/data/fashion-mnist"
    cluster = config["cluster"]
    assert cluster["kind"] == "ray" and cluster["num_workers"] == 2 and cluster["cpus_per_worker"] == 1
    assert config["tracking"]["register_as"] and config["tracking"]["log_model"], "the S3 check looks for a model"


def test_compose_command_names_every_file_and_the_cpu_profile(tmp_path):
    engine = type("FakeEngine", (), {"compose": ["docker-compose"]})()
    files = [DOCKER / "compose.yaml", DOCKER / "standins" / "compose.s3.yaml"]
    command = stack.Stack(engine, "p", tmp_path / "stack.env", files, {}).compose("up", "-d")
    assert command == ["docker-compose", "-p", "p", "--env-file", str(tmp_path / "stack.env"), "-f", "docker/compose.yaml",
                       "-f", "docker/standins/compose.s3.yaml", "--profile", "cpu", "up", "-d"]


def test_a_newer_docker_cli_without_buildx_is_passed_over(tmp_path, monkeypatch):
    """A 28.x CLI without buildx refuses DOCKER_BUILDKIT=1 builds; a 20.10 CLI has BuildKit built in."""
    def fake_cli(folder: str, version: str) -> Path:
        path = tmp_path / folder / "docker"
        path.parent.mkdir()
        path.write_text(f"#!/bin/sh\n[ \"$1\" = version ] && echo {version} && exit 0\nexit 1\n")
        path.chmod(0o755)
        return path

    new, old = fake_cli("new", "28.2.2"), fake_cli("old", "20.10.24+dfsg1")
    monkeypatch.setenv("PATH", f"{new.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("shutil.which", lambda name: str(new) if name == "docker" else None)
    monkeypatch.setattr("tests.deploy.stack.engine.DEBIAN_CLI", str(old))
    assert buildkit_cli() == str(old)
    monkeypatch.setattr("tests.deploy.stack.engine.DEBIAN_CLI", str(tmp_path / "missing"))
    with pytest.raises(StepFailed, match="buildx"):
        buildkit_cli()


def test_wait_for_names_what_it_waited_for():
    with pytest.raises(StepFailed, match=r"mlflow healthy: not reached within 0 s \(last error: refused\)"):
        wait_for("mlflow healthy", lambda: (_ for _ in ()).throw(ConnectionRefusedError("refused")), timeout=0, interval=0)
    assert wait_for("ready", lambda: "yes", timeout=0) == "yes"
