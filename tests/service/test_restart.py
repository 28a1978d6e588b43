"""Restart safety: stop the service with one job running and one queued, start it again.

First a clean stop (SIGTERM) while the job's process lives on: the new service re-adopts it.
Then a crash (SIGKILL) that takes the job's process with it: the new service launches the same
command again (attempt 2), training resumes from its last checkpoint, and the queued job still runs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.service.conftest import tiny_train_config

pytestmark = pytest.mark.slow


def _stored(home, job_id: int) -> tuple[str, int, dict]:
    with sqlite3.connect(home / "jobs.db") as db:
        state, attempts, handle = db.execute("SELECT state, attempts, handle FROM jobs WHERE id = ?",
                                             (job_id,)).fetchone()
    return state, attempts, json.loads(handle) if handle else {}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def test_restarts_lose_nothing_and_run_nothing_twice(start_service, idx_data, attnlab_home):
    service = start_service(slots=1)
    long_run = tiny_train_config("restart-long", data=idx_data, max_steps=14)
    long_run["trainer"]["max_epochs"] = 100
    long_run["tracking"]["log_model"] = False
    queued = tiny_train_config("restart-queued", data=idx_data, max_steps=2)
    queued["tracking"]["log_model"] = False
    with service.client() as client:
        first = client.post("/jobs", json={"config": long_run}).json()["id"]
        second = client.post("/jobs", json={"config": queued}).json()["id"]
    service.wait_for(first, ("RUNNING",), timeout=30)
    _wait(lambda: _stored(attnlab_home, first)[2], 30, "the first attempt's handle was recorded")
    pid = _stored(attnlab_home, first)[2]["pid"]

    service.stop(signal.SIGTERM)  # clean stop: the job's process keeps running
    os.kill(pid, 0)
    service.start()
    assert service.wait_for(first, ("RUNNING",), timeout=10)["attempts"] == 1
    time.sleep(1.0)  # a few supervisor passes: the live attempt is adopted, not re-launched
    assert _stored(attnlab_home, first)[1:] == (1, _stored(attnlab_home, first)[2])
    assert _stored(attnlab_home, first)[2]["pid"] == pid

    checkpoint = attnlab_home / "runs" / "restart-long" / "checkpoints" / "last.ckpt"
    _wait(checkpoint.exists, 240, f"{checkpoint} was written")
    service.stop(signal.SIGKILL)  # crash, and the job's process dies with the machine's session
    os.killpg(pid, signal.SIGKILL)
    assert _stored(attnlab_home, second)[0] == "QUEUED"
    service.start()

    done = service.wait_for(first, ("SUCCEEDED", "FAILED"), timeout=420)
    with service.client() as client:
        log = client.get(f"/jobs/{first}/logs").text
    assert done["state"] == "SUCCEEDED", log[-3000:]
    assert done["attempts"] == 2
    assert "launching attempt 2, resuming from the last checkpoint" in log
    assert log.count(f"attnlab: job {first} attempt 1 starting") == 1
    assert log.count(f"attnlab: job {first} attempt 2 starting") == 1

    after = service.wait_for(second, ("SUCCEEDED", "FAILED"), timeout=420)
    assert after["state"] == "SUCCEEDED" and after["attempts"] == 1
    with service.client() as client:
        assert client.get("/jobs").json()["total"] == 2
    # The resumed attempt continued the same MLflow run: one run per job.
    tracking = MlflowClient(f"sqlite:///{attnlab_home / 'mlflow.db'}")
    experiment = tracking.get_experiment_by_name("service-tests")
    names = [run.info.run_name for run in tracking.search_runs([experiment.experiment_id])]
    assert sorted(names) == ["restart-long", "restart-queued"]
    assert done["mlflow_run_id"] in {run.info.run_id for run in tracking.search_runs([experiment.experiment_id])}
