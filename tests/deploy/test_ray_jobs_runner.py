"""The Ray Jobs runner against a real two-node cluster, with a stand-in for the `attnlab` CLI.

The stand-in is a `python -c` script placed where the runner puts the CLI command, so it receives the
same `train --config FILE` arguments; it prints the shipped config and then does what the config
says (exit code, sleep). Training across nodes is tested in test_ray_ddp_job.py.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from service.runners.base import RunnerJob, RunnerState
from service.runners.ray_jobs import RayJobsRunner, entrypoint, submission_id
from service.settings import Settings

pytestmark = pytest.mark.slow

FAKE_CLI = """
import pathlib, sys, time, yaml
command, flag, path = sys.argv[1:4]
config = yaml.safe_load(pathlib.Path(path).read_text())
print(f"fake-cli {command} {flag} name={config['name']}", flush=True)
time.sleep(config.get('sleep', 0))
sys.exit(config.get('exit', 0))
"""


def make_runner(cluster, *, token: str | None = "cluster") -> RayJobsRunner:
    settings = Settings(ray_address=cluster.dashboard_url, ray_token=cluster.token if token == "cluster" else token)
    return RayJobsRunner(settings, command=(sys.executable, "-c", FAKE_CLI), unreachable_grace=0.0)


def write_config(folder: Path, name: str, **fields) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text("\n".join([f"name: {name}", *(f"{key}: {value}" for key, value in fields.items())]) + "\n")
    return path


def wait_for_state(runner: RayJobsRunner, handle: str, wanted: set[RunnerState], timeout: float = 60.0) -> RunnerState:
    deadline = time.monotonic() + timeout
    state = runner.poll(handle)
    while state not in wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        state = runner.poll(handle)
    return state


def test_entrypoint_runs_the_cli_on_a_node_local_copy_of_the_config():
    job = RunnerJob(id="j1", kind="search", name="n", attempt=2)
    line = entrypoint(("attnlab",), job)
    assert line.endswith('exec attnlab tune --config "$config"')
    assert submission_id(job) == "attnlab-j1-2"


def test_the_service_picks_the_ray_runner_when_a_ray_address_is_set():
    from service.runners import make_runner as service_make_runner

    runner = service_make_runner(Settings(ray_address="http://ray-head:8265", ray_token="secret"))
    assert isinstance(runner, RayJobsRunner)
    assert runner.command == ("attnlab",) and runner.token == "secret"


def test_job_ships_its_config_succeeds_and_its_log_reaches_the_service(ray_cluster, tmp_path):
    runner = make_runner(ray_cluster)
    job = RunnerJob(id="ok", kind="train", name="shipped-config", attempt=1, env={"ATTNLAB_HOME": str(tmp_path)})
    log_path = tmp_path / "jobs" / "ok" / "log.txt"
    handle = runner.start(job, write_config(tmp_path, "shipped-config"), log_path)

    assert wait_for_state(runner, handle, {RunnerState.SUCCEEDED, RunnerState.FAILED}) == RunnerState.SUCCEEDED
    runner.sync_logs(handle, log_path)
    runner.sync_logs(handle, log_path)  # a second pass copies nothing twice
    log = log_path.read_text()
    assert log.count("fake-cli train --config name=shipped-config") == 1
    assert f"submitted to Ray at {ray_cluster.dashboard_url} as {handle}" in log


def test_failing_job_is_failed_and_resubmitting_an_attempt_is_idempotent(ray_cluster, tmp_path):
    runner = make_runner(ray_cluster)
    job = RunnerJob(id="bad", kind="train", name="fails", attempt=1)
    config = write_config(tmp_path, "fails", exit=3)
    handle = runner.start(job, config, tmp_path / "log.txt")
    # The service died after submitting and before recording the handle: the same attempt again.
    assert runner.start(job, config, tmp_path / "log.txt") == handle
    assert wait_for_state(runner, handle, {RunnerState.SUCCEEDED, RunnerState.FAILED}) == RunnerState.FAILED
    next_attempt = RunnerJob(id="bad", kind="train", name="fails", attempt=2)
    assert runner.start(next_attempt, config, tmp_path / "log.txt") != handle


def test_cancel_stops_the_job_on_the_cluster(ray_cluster, tmp_path):
    runner = make_runner(ray_cluster)
    job = RunnerJob(id="long", kind="train", name="sleeps", attempt=1)
    log_path = tmp_path / "log.txt"
    handle = runner.start(job, write_config(tmp_path, "sleeps", sleep=600), log_path)
    deadline = time.monotonic() + 60
    while "fake-cli" not in (log_path.read_text() if log_path.exists() else "") and time.monotonic() < deadline:
        runner.sync_logs(handle, log_path)
        time.sleep(0.5)
    assert runner.poll(handle) == RunnerState.RUNNING

    runner.cancel(handle)
    runner.cancel(handle)  # idempotent
    assert wait_for_state(runner, handle, {RunnerState.CANCELLED}, timeout=30) == RunnerState.CANCELLED
    assert str(runner.client().get_job_status(handle)) == "STOPPED"


def test_a_new_attempt_stops_the_attempt_the_service_lost_track_of(ray_cluster, tmp_path):
    runner = make_runner(ray_cluster)
    first = RunnerJob(id="relaunched", kind="train", name="relaunched", attempt=1)
    orphan = runner.start(first, write_config(tmp_path, "relaunched", sleep=600), tmp_path / "log.txt")
    assert runner.poll(orphan) == RunnerState.RUNNING
    second = runner.start(replace(first, attempt=2), write_config(tmp_path, "relaunched"), tmp_path / "log.txt")
    assert wait_for_state(runner, orphan, {RunnerState.CANCELLED}, timeout=30) == RunnerState.CANCELLED
    assert wait_for_state(runner, second, {RunnerState.SUCCEEDED, RunnerState.FAILED}) == RunnerState.SUCCEEDED


def test_unknown_or_unreachable_attempts_are_lost(ray_cluster):
    assert make_runner(ray_cluster).poll("attnlab-never-submitted-1") == RunnerState.LOST
    unreachable = RayJobsRunner(Settings(ray_address="http://127.0.0.1:9"), unreachable_grace=0.0)
    assert unreachable.poll("attnlab-anything-1") == RunnerState.LOST


def test_cluster_with_token_auth_refuses_a_runner_without_the_token(ray_cluster, tmp_path):
    from ray.exceptions import AuthenticationError

    runner = make_runner(ray_cluster, token="not-the-token")
    with pytest.raises(AuthenticationError):
        runner.start(RunnerJob(id="x", kind="train", name="x", attempt=1), write_config(tmp_path, "x"), tmp_path / "log")


def test_health_endpoints_the_compose_healthchecks_use_need_no_token(ray_cluster):
    import urllib.request

    head = f"{ray_cluster.dashboard_url}/api/gcs_healthz"
    worker = f"http://127.0.0.1:{ray_cluster.agent_ports[1]}/api/local_raylet_healthz"
    for url in (head, worker):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200, url
