"""Fault 5: a running trial and then the search's driver are SIGKILLed mid-search.

The trial's process dies first (Tune retries it: `search.max_failures`), then the driver with the
local Ray instance it started. Two ways back, one test each:
- `attnlab tune --resume NAME` from the command line;
- a search submitted to the service: its job's process group dies, the supervisor sees the attempt
  LOST and launches it again, which restores the same search.
Either way the search finishes with every grid point run to the end once: one MLflow child run per
trial, none duplicated, none left RUNNING.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import (PROJECT_ROOT, attnlab, child_env, recorded_step, report_lost, tiny_run,
                                   wait_until, write_config)
from tests.faults.test_ray_worker_killed import kill_session
from tests.service.conftest import launch_service
from training.tracking import client, default_tracking_uri

pytestmark = pytest.mark.slow
LEARNING_RATES = [0.05, 0.02]


def search_config(name: str, data_root: Path) -> dict:
    config = tiny_run(name, data_root, epochs=2, batches=8)
    config["tracking"]["experiment"] = "fault-search"
    config["search"] = {"space": {"optim.lr": {"grid": LEARNING_RATES}}, "scheduler": {"kind": "fifo"},
                        "max_concurrent_trials": 1, "max_failures": 2, "resources": {"cpu": 1}}
    return config


def trial_processes(session: int) -> list[int]:
    """Pids of the Ray actor processes that run trials (function trainables run as `ImplicitFunc`)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(entry)) == session and b"ImplicitFunc" in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def training_trial(home: Path, name: str) -> bool:
    """Some trial of the search has written a checkpoint (it is mid-training)."""
    return any(recorded_step(folder / "checkpoints" / "last.ckpt") >= 2 for folder in (home / "runs").glob(f"{name}-*"))


def kill_a_trial_then_the_driver(home: Path, name: str, session: int, process) -> None:
    wait_until(lambda: training_trial(home, name), 600, "a trial is training", interval=0.2, process=process)
    trials = wait_until(lambda: trial_processes(session), 60, "the trial's process")
    os.kill(trials[0], signal.SIGKILL)
    # Tune notices, retries the trial; the driver dies a moment later, mid-search.
    wait_until(lambda: trial_processes(session) and trial_processes(session) != trials, 120,
               "Tune restarted the killed trial", interval=0.2, process=process)
    kill_session(session)


def accounted(home: Path, name: str) -> dict:
    state = json.loads((home / "searches" / name / "search.json").read_text())
    mlflow = client(default_tracking_uri())
    experiment = mlflow.get_experiment_by_name("fault-search").experiment_id
    children = mlflow.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{state['parent_run_id']}'")
    rates = sorted(float(run.data.params["optim.lr"]) for run in children)
    parent = mlflow.get_run(state["parent_run_id"])
    return {
        "grid points without a finished trial": sorted(set(LEARNING_RATES) - {
            float(run.data.params["optim.lr"]) for run in children if run.info.status == "FINISHED"}),
        "duplicate child runs": len(children) - len(set(rates)),
        "child runs not FINISHED": [run.info.run_name for run in children if run.info.status != "FINISHED"],
        "search not finished": parent.info.status != "FINISHED",
    }


def test_a_search_whose_trial_and_driver_were_killed_resumes_from_the_command_line(fault_home, fault_data,
                                                                                    tmp_path):
    path = write_config(tmp_path / "search.yaml", search_config("killed-search", fault_data))
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(attnlab("tune", "--config", str(path)), stdout=log, stderr=subprocess.STDOUT,
                                  env=child_env(), start_new_session=True, cwd=PROJECT_ROOT)
    try:
        kill_a_trial_then_the_driver(fault_home, "killed-search", driver.pid, driver)
    finally:
        kill_session(driver.pid)
        driver.wait()
    resumed = subprocess.run(attnlab("tune", "--resume", "killed-search"), capture_output=True, text=True,
                             timeout=900, env=child_env(), start_new_session=True, cwd=PROJECT_ROOT)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-5000:]
    assert f"search killed-search: {len(LEARNING_RATES)} trials" in output
    report_lost("a trial, then the search driver, killed; attnlab tune --resume", accounted(fault_home, "killed-search"))


def _job_handle(home: Path, job_id: int) -> dict:
    with sqlite3.connect(home / "jobs.db") as db:
        (handle,) = db.execute("SELECT handle FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return json.loads(handle) if handle else {}


def test_a_search_job_whose_trial_and_driver_were_killed_is_retried_by_the_service(fault_home, fault_data):
    service = launch_service(fault_home, fault_data, slots=1)
    try:
        with service.client() as http:
            job_id = http.post("/searches", json={"config": search_config("job-search", fault_data)}).json()["id"]
        handle = wait_until(lambda: _job_handle(fault_home, job_id), 60, "the search job started")
        kill_a_trial_then_the_driver(fault_home, "job-search", handle["pid"], None)
        job = service.wait_for(job_id, ("SUCCEEDED", "FAILED"), timeout=900)
        with service.client() as http:
            log = http.get(f"/jobs/{job_id}/logs").text
    finally:
        service.stop()
    assert job["state"] == "SUCCEEDED" and job["attempts"] == 2, log[-5000:]
    assert "launching attempt 2, resuming from the last checkpoint" in log
    report_lost("a trial, then the search job's driver, killed; the service retried the job",
                accounted(fault_home, "job-search"))
