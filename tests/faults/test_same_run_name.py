"""Fault 6: two writers for one run name at once (CLI + CLI, CLI + service job).

A first `attnlab train` is frozen (SIGSTOP) while it holds its run's lock, so the overlap is certain:
a second CLI with the same name must be refused at once naming the first (pid, command), and so must
a service job of that name. Never two writers in one checkpoint folder or MLflow run. (Two service
jobs of one name never overlap: the second waits in the queue, tests/service/test_queue.py.)
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.faults.conftest import (attnlab, child_env, metric_steps, missing, recorded_step, report_lost, run_train,
                                   tiny_run, wait_until, write_config)
from tests.service.conftest import launch_service
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

pytestmark = pytest.mark.slow
EPOCHS, BATCHES = 2, 6


def _runs_named(name: str) -> list:
    uri = default_tracking_uri()
    return client(uri).search_runs([experiment_id(uri, "attnlab", create=False)], f"tags.`{RUN_NAME_TAG}` = '{name}'")


def test_a_second_writer_of_a_run_name_is_refused_naming_the_first(fault_home, fault_data, tmp_path):
    config = tiny_run("twin", fault_data, epochs=EPOCHS, batches=BATCHES)
    path = write_config(tmp_path / "run.yaml", config)
    checkpoint = fault_home / "runs" / "twin" / "checkpoints" / "last.ckpt"
    service = None
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(attnlab("train", "--config", str(path)), stdout=log, stderr=subprocess.STDOUT,
                                 env=child_env())
    try:
        wait_until(lambda: recorded_step(checkpoint) >= 2, 300, "the first run is training", process=first)
        first.send_signal(signal.SIGSTOP)

        second = run_train(path)
        assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"run 'twin' is already being trained by pid {first.pid}" in second.stderr
        assert "train --config" in second.stderr  # the holder's command

        service = launch_service(fault_home, fault_data, slots=1)
        with service.client() as http:
            refused = http.post("/jobs", json={"config": config}).json()["id"]
            job = service.wait_for(refused, ("SUCCEEDED", "FAILED"), timeout=300)
            assert job["state"] == "FAILED" and f"already being trained by pid {first.pid}" in job["message"]

        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
        if service is not None:
            service.stop()

    twin = _runs_named("twin")
    mlflow = client(default_tracking_uri())
    report_lost("two writers for one run name", {
        "MLflow runs beyond one": len(twin) - 1,
        "epochs never validated": missing([BATCHES * (e + 1) - 1 for e in range(EPOCHS)],
                                          metric_steps(mlflow, twin[0].info.run_id, "val/acc")),
        "runs not finished": [run.info.run_name for run in twin if run.info.status != "FINISHED"],
        "checkpoint steps beyond the one writer's": recorded_step(checkpoint) - EPOCHS * BATCHES,
    })
