"""A training job submitted through the service's Ray runner trains DDP across two Ray nodes.

The job runs the real CLI (`python -m service.cli train --config FILE`) on the cluster; its config asks
for `cluster.kind: ray` with 2 workers of 1 CPU each, and each node has 1 CPU, so Ray Train must put
one worker on each node (gloo on CPU). MLflow tracks to an SQLite file on local disk that both
"nodes" see, as a shared filesystem would on a real cluster.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from datamodules.synthetic import write_idx_dataset
from service.runners.base import RunnerJob, RunnerState
from service.runners.ray_jobs import RayJobsRunner
from service.settings import Settings

pytestmark = pytest.mark.slow

TERMINAL = {RunnerState.SUCCEEDED, RunnerState.FAILED, RunnerState.CANCELLED, RunnerState.LOST}


def training_config(tmp_path: Path, name: str, *, steps: int) -> tuple[Path, str]:
    data = write_idx_dataset(tmp_path / "fmnist", train=96, test=32)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": name,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": str(data), "batch_size": 8,
                 "num_workers": 0, "augment": False},
        "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-stage4", "reduction": 4},
        "optim": {"name": "sgd", "lr": 0.05},
        "trainer": {"accelerator": "cpu", "max_epochs": 1 if steps else 1000, "limit_train_batches": steps or None,
                    "limit_val_batches": 1, "limit_test_batches": 1, "enable_progress_bar": False,
                    "log_every_n_steps": 1},
        "tracking": {"uri": tracking_uri, "experiment": "deploy", "log_model": False, "figures": False},
        "cluster": {"kind": "ray", "num_workers": 2, "cpus_per_worker": 1,
                    "storage_path": str(tmp_path / "ray_results")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, tracking_uri


def make_runner(cluster) -> RayJobsRunner:
    settings = Settings(ray_address=cluster.dashboard_url, ray_token=cluster.token)
    return RayJobsRunner(settings, command=(sys.executable, "-m", "service.cli"))


def train_worker_actors(cluster) -> list[dict]:
    """Ray Train's worker actors (alive or dead) from the dashboard's state API."""
    request = urllib.request.Request(f"{cluster.dashboard_url}/api/v0/actors?limit=1000&detail=1",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        actors = json.load(response)["data"]["result"]["result"]
    return [actor for actor in actors if "TrainWorker" in actor["class_name"]]


def run_until(runner, handle, log_path, done, timeout):
    deadline = time.monotonic() + timeout
    state = runner.poll(handle)
    while not done(state) and time.monotonic() < deadline:
        runner.sync_logs(handle, log_path)
        time.sleep(1)
        state = runner.poll(handle)
    runner.sync_logs(handle, log_path)
    return state


def test_ddp_job_trains_across_both_nodes_and_logs_one_mlflow_run(ray_cluster, tmp_path):
    import mlflow

    config, tracking_uri = training_config(tmp_path, "ddp-two-nodes", steps=2)
    runner = make_runner(ray_cluster)
    job = RunnerJob(id="ddp", kind="train", name="ddp-two-nodes", attempt=1,
                    env={"ATTNLAB_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking_uri})
    log_path = tmp_path / "job.log"
    handle = runner.start(job, config, log_path)

    state = run_until(runner, handle, log_path, lambda state: state in TERMINAL, timeout=150)
    assert state == RunnerState.SUCCEEDED, log_path.read_text()[-4000:]

    workers = [actor for actor in train_worker_actors(ray_cluster) if actor["job_id"] == _job_id(runner, handle)]
    assert len(workers) == 2
    assert len({actor["node_id"] for actor in workers}) == 2, "the two DDP ranks must run on different nodes"

    runs = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.MlflowClient(tracking_uri).get_experiment_by_name("deploy").experiment_id])
    assert [run.info.run_name for run in runs] == ["ddp-two-nodes"]
    assert runs[0].info.status == "FINISHED"
    assert any(key.startswith("train") for key in runs[0].data.metrics), runs[0].data.metrics


def test_cancelling_a_training_job_stops_its_workers_on_the_cluster(ray_cluster, tmp_path):
    config, tracking_uri = training_config(tmp_path, "ddp-cancelled", steps=0)
    runner = make_runner(ray_cluster)
    job = RunnerJob(id="cancel", kind="train", name="ddp-cancelled", attempt=1,
                    env={"ATTNLAB_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking_uri})
    log_path = tmp_path / "job.log"
    handle = runner.start(job, config, log_path)

    def workers_alive() -> list[dict]:
        job_id = _job_id(runner, handle)
        return [actor for actor in train_worker_actors(ray_cluster)
                if actor["job_id"] == job_id and actor["state"] == "ALIVE"]

    deadline = time.monotonic() + 120
    while len(workers_alive()) < 2 and time.monotonic() < deadline:
        assert runner.poll(handle) == RunnerState.RUNNING, log_path.read_text()[-4000:]
        time.sleep(1)
    assert len(workers_alive()) == 2, "training never started"

    runner.cancel(handle)
    state = run_until(runner, handle, log_path, lambda state: state in TERMINAL, timeout=60)
    assert state == RunnerState.CANCELLED
    deadline = time.monotonic() + 60
    while workers_alive() and time.monotonic() < deadline:
        time.sleep(1)
    assert workers_alive() == [], "the job's Ray Train workers outlived the cancelled job"


def _job_id(runner: RayJobsRunner, handle: str) -> str | None:
    return runner.client().get_job_info(handle).job_id
