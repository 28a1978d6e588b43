"""The stack test's checks: a training job through the service's HTTP API, DDP across the two Ray
containers, the service restarted mid-job, the run in MLflow (and in Postgres), its artifacts in S3."""

from __future__ import annotations

import json
import time

from .common import StepFailed, get_json, http, run, wait_for
from .stack import Stack, wait_healthy

EXPERIMENT = "stack-test"
RUN_NAME = "stack-test-ddp"
MODEL_NAME = "stack-test-se"
JOB_TIMEOUT = 1200.0


def training_config() -> dict:
    """A small real run: SE-ResNet-18 on Fashion-MNIST, 2 Ray Train workers of 1 CPU (DDP over gloo).
    Long enough (a few minutes on 2 cores) that the service restart lands while it trains."""
    return {
        "name": RUN_NAME,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": "/shared/data/fashion-mnist",
                 "batch_size": 32, "num_workers": 0, "augment": False,
                 "limit_train": 1536, "limit_val": 256, "limit_test": 256},
        "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-stage4", "reduction": 4},
        "optim": {"name": "sgd", "lr": 0.05},
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "log_every_n_steps": 2, "checkpoint_every_n_steps": 10,
                    "enable_progress_bar": False},
        "tracking": {"experiment": EXPERIMENT, "register_as": MODEL_NAME, "figures": True, "log_model": True},
        "cluster": {"kind": "ray", "num_workers": 2, "cpus_per_worker": 1},
    }


def submit(stack: Stack) -> int:
    status, body = http("POST", f"{stack.url('ATTNLAB_HOST_PORT')}/jobs", token=stack.values["ATTNLAB_TOKEN"],
                        body={"config": training_config(), "idempotency_key": "stack-test"})
    if status != 201:
        raise StepFailed(f"POST /jobs answered {status}: {json.dumps(body)[:1500]}")
    print(f"job {body['id']} queued")
    return body["id"]


def job(stack: Stack, job_id: int) -> dict:
    return get_json(f"{stack.url('ATTNLAB_HOST_PORT')}/jobs/{job_id}", token=stack.values["ATTNLAB_TOKEN"])


def job_log(stack: Stack, job_id: int) -> str:
    status, body = http("GET", f"{stack.url('ATTNLAB_HOST_PORT')}/jobs/{job_id}/logs", token=stack.values["ATTNLAB_TOKEN"])
    return body if status == 200 and isinstance(body, str) else ""


def ray_job(stack: Stack, submission_id: str) -> dict:
    return get_json(f"{stack.url('RAY_DASHBOARD_PORT')}/api/jobs/{submission_id}", token=stack.values["RAY_AUTH_TOKEN"])


def train_workers(stack: Stack, ray_job_id: str) -> list[dict]:
    actors = get_json(f"{stack.url('RAY_DASHBOARD_PORT')}/api/v0/actors?limit=1000&detail=1",
                      token=stack.values["RAY_AUTH_TOKEN"])["data"]["result"]["result"]
    return [actor for actor in actors if "TrainWorker" in actor["class_name"] and actor["job_id"] == ray_job_id]


def wait_training(stack: Stack, job_id: int) -> dict:
    """Until the job trains: Ray job RUNNING, MLflow run recorded, a training metric logged."""

    def training() -> dict | None:
        current = job(stack, job_id)
        if current["state"] in ("FAILED", "CANCELLED", "SUCCEEDED"):
            raise StepFailed(f"job ended as {current['state']} before the restart: {current['message']}\n"
                             f"{job_log(stack, job_id)[-4000:]}")
        started = current["mlflow_run_id"] and any(key.startswith("train") for key in current.get("metrics", {}))
        return current if started else None

    return wait_for(f"job {job_id} training (MLflow run with a train metric)", training, timeout=JOB_TIMEOUT, interval=3)


def check_ddp(stack: Stack, submission_id: str) -> None:
    """The run's two Train workers are alive on two nodes: one in the head container, one in the worker's."""
    ray_job_id = ray_job(stack, submission_id)["job_id"]

    def placed() -> list[dict] | None:
        workers = [actor for actor in train_workers(stack, ray_job_id) if actor["state"] == "ALIVE"]
        return workers if len(workers) == 2 else None

    workers = wait_for("2 Ray Train workers alive", placed, timeout=300)
    summary = get_json(f"{stack.url('RAY_DASHBOARD_PORT')}/nodes?view=summary",
                       token=stack.values["RAY_AUTH_TOKEN"])["data"]["summary"]
    host_of_node = {node["raylet"]["nodeId"]: node["hostname"] for node in summary}
    containers = {stack.inspect(service)["Config"]["Hostname"]: service for service in ("ray-head", "ray-worker-cpu")}
    placement = sorted(containers.get(host_of_node.get(actor["node_id"]), f"node {actor['node_id']}") for actor in workers)
    if placement != ["ray-head", "ray-worker-cpu"]:
        raise StepFailed(f"the 2 DDP workers run on {placement}, expected one in each Ray container")
    print("DDP: one Ray Train worker in the ray-head container, one in ray-worker-cpu")


def restart_service(stack: Stack, job_id: int, submission_id: str) -> tuple[dict, str]:
    """Stop the service while the job trains, then start it; returns the job and log seen before."""
    before, log_before = job(stack, job_id), job_log(stack, job_id)
    run(stack.compose("stop", "attnlab"), env=stack.engine.env)
    state = ray_job(stack, submission_id)["status"]
    if state != "RUNNING":
        raise StepFailed(f"the Ray job was {state} when the service stopped: the restart was not mid-job "
                         "(make the training config longer)")
    run(stack.compose("start", "attnlab"), env=stack.engine.env)
    wait_healthy(stack, "attnlab", timeout=300)
    return before, log_before


def check_nothing_lost(stack: Stack, job_id: int, before: dict, log_before: str, submission_id: str) -> dict:
    """The restarted service re-adopted the running attempt and the job ended well, nothing lost."""
    final = wait_for(f"job {job_id} finished", lambda: _finished(stack, job_id), timeout=JOB_TIMEOUT, interval=3)
    log = job_log(stack, job_id)
    if final["state"] != "SUCCEEDED":
        raise StepFailed(f"job {job_id} {final['state']}: {final['message']}\n{log[-4000:]}")
    problems = []
    if final["attempts"] != 1:
        problems.append(f"{final['attempts']} attempts: the restarted service relaunched the job instead of adopting it")
    if final["mlflow_run_id"] != before["mlflow_run_id"]:
        problems.append(f"MLflow run changed from {before['mlflow_run_id']} to {final['mlflow_run_id']}")
    if not log.startswith(log_before):
        problems.append("the job log after the restart does not continue the log before it")
    if ray_job(stack, submission_id)["status"] != "SUCCEEDED":
        problems.append(f"Ray job {submission_id} is {ray_job(stack, submission_id)['status']}")
    listed = get_json(f"{stack.url('ATTNLAB_HOST_PORT')}/jobs", token=stack.values["ATTNLAB_TOKEN"])
    if listed["total"] != 1:
        problems.append(f"{listed['total']} jobs listed, expected the one submitted")
    if problems:
        raise StepFailed("; ".join(problems))
    shown = {key: final["metrics"].get(key) for key in ("test/acc", "test/loss")}
    print(f"job {job_id} SUCCEEDED in 1 attempt across the restart; "
          + ", ".join(f"{key}={value:.3g}" for key, value in shown.items() if value is not None))
    return final


def _finished(stack: Stack, job_id: int) -> dict | None:
    current = job(stack, job_id)
    return current if current["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None


def mlflow_login(stack: Stack) -> tuple[str, str]:
    """The stack's MLflow server has basic auth on (compose requires its admin password)."""
    return stack.values["MLFLOW_AUTH_ADMIN_USERNAME"], stack.values["MLFLOW_AUTH_ADMIN_PASSWORD"]


def check_mlflow(stack: Stack, run_id: str) -> dict:
    """The run through MLflow's REST API (one run of that name, FINISHED, metrics, a registered
    version), and in Postgres itself: the server's backend store is the database."""
    base = f"{stack.url('MLFLOW_PORT')}/api/2.0/mlflow"
    basic = mlflow_login(stack)
    run_info = get_json(f"{base}/runs/get?run_id={run_id}", basic=basic)["run"]
    experiment_id = run_info["info"]["experiment_id"]
    status, found = http("POST", f"{base}/runs/search", basic=basic, body={
        "experiment_ids": [experiment_id], "filter": f"attributes.run_name = '{RUN_NAME}'"})
    problems = []
    if status != 200 or len(found.get("runs", [])) != 1:
        problems.append(f"expected one run named {RUN_NAME}, found {len(found.get('runs', [])) if status == 200 else found}")
    if run_info["info"]["status"] != "FINISHED":
        problems.append(f"run status {run_info['info']['status']}")
    metrics = {metric["key"] for metric in run_info["data"].get("metrics", [])}
    if not any(key.startswith("train") for key in metrics) or not any(key.startswith("test") for key in metrics):
        problems.append(f"train/test metrics missing: {sorted(metrics)}")
    versions = get_json(f"{base}/registered-models/get?name={MODEL_NAME}",
                        basic=basic)["registered_model"].get("latest_versions", [])
    if not any(version.get("run_id") == run_id for version in versions):
        problems.append(f"no version of {MODEL_NAME} comes from run {run_id}")
    user = stack.values["POSTGRES_USER"]
    row = stack.exec("postgres", "psql", "-U", user, "-d", "mlflow", "-tAc",
                     f"select name || '|' || status from runs where run_uuid = '{run_id}'").strip()
    if row != f"{RUN_NAME}|FINISHED":
        problems.append(f"Postgres holds {row or 'no row'} for run {run_id}")
    if problems:
        raise StepFailed("; ".join(problems))
    print(f"MLflow: run {run_id} FINISHED in experiment {experiment_id}, {len(metrics)} metrics, "
          f"model {MODEL_NAME} v{versions[-1]['version']}; Postgres agrees")
    return run_info


S3_LISTING = """
import json, os, sys, boto3
bucket = os.environ["MLFLOW_ARTIFACTS_DESTINATION"].split("/")[2]
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[1])
print(json.dumps({item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}))
"""


def check_s3(stack: Stack, run_info: dict) -> None:
    """The run's artifacts are objects in the S3 bucket (listed with the MLflow server's own S3
    credentials), and the sizes MLflow reports are those of the objects."""
    run_id, experiment_id = run_info["info"]["run_id"], run_info["info"]["experiment_id"]
    objects = json.loads(stack.exec("mlflow", "python", "-c", S3_LISTING, f"{experiment_id}/"))
    prefix = f"{experiment_id}/{run_id}/artifacts/"
    of_run = {key[len(prefix):]: size for key, size in objects.items() if key.startswith(prefix)}
    problems = []
    for wanted in ("config/train.yaml", "checkpoints/", "figures/"):
        if not any(key.startswith(wanted) and of_run[key] > 0 for key in of_run):
            problems.append(f"no {wanted} object under s3://.../{prefix}")
    if not any(key.endswith("/MLmodel") for key in objects):
        problems.append(f"no logged model (MLmodel) under s3://.../{experiment_id}/")
    listing = get_json(f"{stack.url('MLFLOW_PORT')}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=checkpoints",
                       basic=mlflow_login(stack))
    for entry in listing.get("files", []):
        if not entry.get("is_dir") and of_run.get(entry["path"]) != int(entry["file_size"]):
            problems.append(f"MLflow lists {entry['path']} with {entry['file_size']} bytes, S3 has {of_run.get(entry['path'])}")
    if problems:
        raise StepFailed("; ".join(problems) + f"\nobjects: {sorted(objects)[:40]}")
    print(f"S3: {len(of_run)} objects of run {run_id} ({sum(of_run.values()) / 1e6:.1f} MB), "
          f"{len(objects)} under the experiment")


def check_job(stack: Stack) -> tuple[int, str, dict]:
    """Submit, see DDP on both containers; returns (job id, Ray submission id, the job while training)."""
    job_id = submit(stack)
    started = time.monotonic()
    training = wait_training(stack, job_id)
    submission_id = f"attnlab-{job_id}-{training['attempts']}"
    check_ddp(stack, submission_id)
    print(f"job {job_id} training after {time.monotonic() - started:.0f} s (Ray job {submission_id}, "
          f"MLflow run {training['mlflow_run_id']})")
    return job_id, submission_id, training
