"""Fault 4: one Ray Train worker process of a 2-worker run is SIGKILLed mid-training.

The driver lives; Ray Train's failure handling (`cluster.max_failures`) must restart the worker
group from the last checkpoint the controller registered, the restarted rank 0 must continue the
same MLflow run, and the run must finish with every epoch validated.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import (attnlab, child_env, metric_steps, missing, report_lost, tiny_run, wait_until,
                                   write_config)
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

pytestmark = pytest.mark.slow
EPOCHS, BATCHES = 3, 6


def train_workers(session: int) -> list[int]:
    """Pids of the Ray Train worker processes started by the driver of `session`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != session:
                continue
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if b"RayTrainWorker" in command:
            found.append(int(entry))
    return sorted(found)


def kill_session(session: int) -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_a_killed_ray_train_worker_is_replaced_and_the_run_finishes_in_one_mlflow_run(fault_home, fault_data,
                                                                                     tmp_path):
    config = tiny_run("ray-worker", fault_data, epochs=EPOCHS, batches=BATCHES)
    storage = tmp_path / "ray-storage"
    config["cluster"] = {"kind": "ray", "num_workers": 2, "cpus_per_worker": 1, "storage_path": str(storage),
                         "max_failures": 2}
    path = write_config(tmp_path / "run.yaml", config)
    snapshot = storage / "ray-worker" / "checkpoint_manager_snapshot.json"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(attnlab("train", "--config", str(path)), stdout=log, stderr=subprocess.STDOUT,
                                  env=child_env(), start_new_session=True)
    try:
        # After the first epoch's checkpoint is registered, mid-way through the run.
        wait_until(snapshot.exists, 600, "Ray registered a checkpoint", interval=0.2, process=driver)
        workers = wait_until(lambda: train_workers(driver.pid), 60, "the Ray Train worker processes",
                             process=driver)
        victim = workers[-1]
        os.kill(victim, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-5000:]
    finally:
        kill_session(driver.pid)  # the local Ray cluster the driver started
    output = (tmp_path / "driver.log").read_text()
    assert "resuming 'ray-worker' from" in output and "checkpoint.ckpt" in output, output[-5000:]

    uri = default_tracking_uri()
    mlflow = client(uri)
    runs = mlflow.search_runs([experiment_id(uri, "attnlab", create=False)], f"tags.`{RUN_NAME_TAG}` = 'ray-worker'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    validated = metric_steps(mlflow, runs[0].info.run_id, "val/acc")
    print(f"\n[fault] killed Ray Train worker pid {victim} of {workers}")
    report_lost("a Ray Train worker killed mid-training", {
        "epochs never validated": missing([BATCHES * (e + 1) - 1 for e in range(EPOCHS)], validated),
        "validations from a restart at step 0": [step for step in validated if step < BATCHES - 1],
        "MLflow runs beyond the one": len(runs) - 1,
    })
