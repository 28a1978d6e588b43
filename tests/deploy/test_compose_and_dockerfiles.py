"""docker/ checked without a Docker engine: compose references, healthcheck ordering, settings, images.

These tests read the files the way compose and the builder would (YAML with `${VAR}` interpolation
from docker/env.example, Dockerfile instructions in order), in seconds; `make test-stack`
(tests/deploy/stack/) builds the images and runs the stack for real.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.settings import Settings
from tests.deploy.dockerfiles import DOCKER, REPO, VARIABLE, base_images, dockerfile_instructions, lock

ATTNLAB_DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
ALL_DOCKERFILES = [*ATTNLAB_DOCKERFILES, "Dockerfile.mlflow"]
SOURCE_DIRS = {"modules", "datamodules", "training", "tuning", "service", "configs"}


# ---- reading the files ----------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    values = {}
    for line in (DOCKER / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}; $$ is a literal $."""

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise KeyError(f"{name} is required: {arg}")
        return value or ""

    parts = text.split("$$")
    return "$".join(VARIABLE.sub(substitute, part) for part in parts)


def interpolated(node, env: dict[str, str]):
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def compose(env: dict[str, str] | None = None) -> dict:
    raw = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return interpolated(raw, env_example() if env is None else env)


def services() -> dict[str, dict]:
    return compose()["services"]


def service_env(service: dict) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: str(value) for key, value in environment.items()}


def healthcheck_of(service: dict) -> list | None:
    """The service's healthcheck: its own, else the HEALTHCHECK of the Dockerfile it builds."""
    if "healthcheck" in service:
        return service["healthcheck"].get("test")
    build = service.get("build")
    if build:
        dockerfile = Path(build.get("dockerfile", "Dockerfile")).name
        for keyword, arguments in dockerfile_instructions(dockerfile):
            if keyword == "HEALTHCHECK":
                return arguments.split()
    return None


# ---- compose ------------------------------------------------------------------------------------


def test_compose_has_the_whole_stack():
    assert {"postgres", "minio", "minio-init", "mlflow", "ray-head", "ray-worker-gpu", "attnlab"} <= set(services())


def test_every_variable_compose_uses_is_in_env_example_and_vice_versa():
    text = (DOCKER / "compose.yaml").read_text().replace("$$", "")
    used = {match["name"] for match in VARIABLE.finditer(text)}
    documented = set(env_example())
    assert used - documented == set(), "document these in docker/env.example"
    assert documented - used == set(), "docker/env.example names variables compose never reads"
    for required in ("RAY_AUTH_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD"):  # no stack without their auth
        with pytest.raises(KeyError, match=required):
            compose({key: value for key, value in env_example().items() if key != required})


def test_no_secret_is_committed():
    secret = re.compile(r"PASSWORD|TOKEN|SECRET")
    for name, value in env_example().items():
        if secret.search(name):
            assert value == "" or value.startswith("change-me"), f"env.example holds a real value for {name}"
    raw = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for service_name, service in raw["services"].items():
        for key, value in service_env(service).items():
            if secret.search(key):
                assert value.startswith("${"), f"{service_name}.{key} must come from docker/.env"
    assert "docker/.env" in (REPO / ".gitignore").read_text().splitlines()


def test_every_image_is_pinned_or_built_from_an_existing_dockerfile():
    for name, service in services().items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == REPO, f"{name}: build context must be the repository root"
            assert (context / service["build"]["dockerfile"]).is_file(), name
        else:
            repository, _, tag = service["image"].rpartition(":")
            assert repository and re.search(r"\d", tag) and tag != "latest", f"{name}: pin {service['image']}"


def test_services_wait_for_healthy_dependencies():
    stack = services()
    for name, service in stack.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: use depends_on with conditions"
        for dependency, spec in depends_on.items():
            assert dependency in stack, f"{name} depends on undefined service {dependency}"
            if healthcheck_of(stack[dependency]):
                assert spec["condition"] == "service_healthy", f"{name} -> {dependency}"
            else:
                assert spec["condition"] == "service_completed_successfully", f"{name} -> {dependency}"
    for name in ("postgres", "minio", "mlflow", "ray-head", "ray-worker-gpu", "attnlab"):
        assert healthcheck_of(stack[name]), f"{name} needs a healthcheck"
    assert set(stack["attnlab"]["depends_on"]) == {"ray-head", "mlflow"}
    assert set(stack["mlflow"]["depends_on"]) == {"postgres", "minio-init"}


def test_volumes_and_bind_mounts_exist():
    document = compose()
    declared = set(document.get("volumes", {}))
    for name, service in document["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                if "data" not in source:  # the dataset folder is the user's
                    assert (DOCKER / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
    for name in ("ray-head", "ray-worker-gpu", "attnlab"):
        assert "shared:/shared" in document["services"][name]["volumes"], f"{name} must see the shared volume"


def test_published_ports_are_local_and_match_what_listens():
    stack = services()
    listening = {"attnlab": "8000", "mlflow": "5000", "ray-head": "8265", "minio": "9001"}
    host_ports = []
    for name, service in stack.items():
        for port in service.get("ports", []):
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", f"{name}: publish on 127.0.0.1 only"
            assert container_port == listening[name], f"{name}: {port}"
            host_ports.append(host_port)
    assert len(host_ports) == len(set(host_ports))
    assert service_env(stack["attnlab"])["ATTNLAB_PORT"] == listening["attnlab"]
    assert "--dashboard-port=8265" in (DOCKER / "entrypoint.sh").read_text()


def test_service_settings_in_compose_are_real_settings_fields(monkeypatch):
    env = service_env(services()["attnlab"])
    fields = {f"ATTNLAB_{name.upper()}" for name in Settings.model_fields}
    attnlab_keys = {key for key in env if key.startswith("ATTNLAB_")}
    assert attnlab_keys - fields == set(), "compose sets ATTNLAB_* variables Settings does not have"

    for key in list(os.environ):
        if key.startswith("ATTNLAB_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.ray_address == "http://ray-head:8265"
    assert settings.ray_token is not None and settings.ray_token.get_secret_value() == env_example()["RAY_AUTH_TOKEN"]
    assert settings.mlflow_tracking_uri == "http://mlflow:5000" and not settings.mlflow_ui
    assert settings.home == Path("/shared/attnlab") and settings.host == "0.0.0.0"


def test_every_node_tracks_to_the_mlflow_server_and_shares_the_ray_token():
    stack = services()
    for name in ("ray-head", "ray-worker-gpu", "ray-worker-cpu", "attnlab"):
        env = service_env(stack[name])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == env_example()["RAY_AUTH_TOKEN"], name
        assert env["ATTNLAB_HOME"] == "/shared/attnlab", name


def test_mlflow_uses_postgres_and_serves_minio_artifacts():
    stack = services()
    env = service_env(stack["mlflow"])
    # The driver is named: a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1, and the image has psycopg2.
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in env["MLFLOW_BACKEND_STORE_URI"]
    assert "psycopg2-binary" in lock(DOCKER / "mlflow-requirements.lock")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == f"s3://{service_env(stack['minio-init'])['MLFLOW_BUCKET']}/"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "mlflow:5000" in env["MLFLOW_ALLOWED_HOSTS"].split(",")
    script = (DOCKER / "mlflow-server.sh").read_text()
    for flag in ("--serve-artifacts", "--artifacts-destination", "--allowed-hosts", "--app-name basic-auth"):
        assert flag in script
    assert "mc mb --ignore-existing" in (DOCKER / "minio-init.sh").read_text()


def test_gpu_workers_reserve_nvidia_devices():
    worker = services()["ray-worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert worker["command"] == ["ray-worker"] and services()["ray-head"]["command"] == ["ray-head"]


def test_compose_healthchecks_name_roles_the_healthcheck_script_knows():
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    for name, service in services().items():
        test = service.get("healthcheck", {}).get("test", [])
        if "/opt/attnlab/docker/healthcheck.py" in test:
            assert test[-1] in healthcheck.ENDPOINTS, name
    assert healthcheck.main("no-such-role") == 2


# ---- Dockerfiles --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_DOCKERFILES)
def test_dockerfile_pins_its_base_runs_unprivileged_and_has_a_healthcheck(name):
    instructions = dockerfile_instructions(name)
    keywords = [keyword for keyword, _ in instructions]
    for image in base_images(name):
        repository, _, tag = image.rpartition(":")
        assert repository and re.search(r"\d+\.\d+", tag) and "latest" not in tag, f"{name}: pin {image}"
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{name}: last USER must not be root"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthchecks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "CMD" in healthchecks[0]


@pytest.mark.parametrize("name", ATTNLAB_DOCKERFILES)
def test_dependencies_are_installed_from_pyproject_before_the_sources_are_copied(name):
    instructions = dockerfile_instructions(name)
    copies = [(index, arguments.split()[:-1]) for index, (keyword, arguments) in enumerate(instructions) if keyword == "COPY"
              and not arguments.startswith("--from")]
    for _, sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
    manifest = next(index for index, sources in copies if "pyproject.toml" in sources)
    install = next(index for index, (keyword, arguments) in enumerate(instructions)
                   if keyword == "RUN" and "requirements.lock" in arguments)
    first_source = min(index for index, sources in copies if SOURCE_DIRS & {Path(s).parts[0] for s in sources})
    assert manifest < install < first_source
    assert {Path(s).parts[0] for _, sources in copies for s in sources} >= SOURCE_DIRS
    final = next(arguments for keyword, arguments in instructions if keyword == "RUN" and "--no-deps ." in arguments)
    assert "pip check" in final


def test_both_attnlab_images_run_the_same_python_patch_release_and_torch():
    # Ray refuses a node whose Python differs from the head's in the patch version.
    cpu_base = base_images("Dockerfile")[0]
    assert base_images("Dockerfile.mlflow") == [cpu_base]
    python_version = re.search(r"python:(\d+\.\d+\.\d+)", cpu_base)[1]
    cuda_text = (DOCKER / "Dockerfile.cuda").read_text()
    assert f"uv python install {python_version}" in cuda_text and f"--python {python_version}" in cuda_text
    assert python_version.startswith("3.11.")
    pins = {Requirement(item).name: str(Requirement(item).specifier)
            for item in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for name in ATTNLAB_DOCKERFILES:
        text = (DOCKER / name).read_text()
        for package in ("torch", "torchvision"):
            version = pins[package].removeprefix("==")
            assert re.search(rf"\b{package}=={re.escape(version)}\b", text), f"{name}: {package} must be {version}"


def test_lock_pins_every_dependency_within_pyproject_ranges():
    locked = lock(DOCKER / "requirements.lock")
    for item in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(item)
        if requirement.name in ("torch", "torchvision"):
            continue  # installed per image (CPU or CUDA build)
        assert canonicalize_name(requirement.name) in locked, f"{requirement.name} missing from docker/requirements.lock"
        assert requirement.specifier.contains(locked[canonicalize_name(requirement.name)]), f"{requirement} vs lock"
    server = lock(DOCKER / "mlflow-requirements.lock")
    assert server["mlflow"] == locked["mlflow"], "the MLflow server and its clients must run the same version"


def test_scripts_are_executable():
    for name in ("entrypoint.sh", "mlflow-server.sh", "minio-init.sh", "lock-requirements.sh"):
        assert os.access(DOCKER / name, os.X_OK), name
