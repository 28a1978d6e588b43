"""End to end over real HTTP: a tiny training job and a tiny search through `attnlab serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.service.conftest import TOKEN, tiny_train_config

pytestmark = pytest.mark.slow


def test_training_job_is_followed_to_a_registered_model(start_service, idx_data):
    service = start_service(mlflow_ui="true")
    with service.client() as client:
        submitted = client.post("/jobs", json={"config": tiny_train_config("e2e-train", data=idx_data,
                                                                           register_as="svc-tiny"),
                                               "idempotency_key": "e2e-1"})
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]

        with client.stream("GET", f"/jobs/{job_id}/logs", params={"follow": "true"}, timeout=300) as stream:
            log = b"".join(stream.iter_bytes()).decode()
        assert f"attnlab: job {job_id} attempt 1 starting" in log
        assert f"attnlab: job {job_id} SUCCEEDED" in log, log[-3000:]

        job = client.get(f"/jobs/{job_id}").json()
        assert job["state"] == "SUCCEEDED" and job["attempts"] == 1
        assert job["mlflow_run_id"] and job["registered_model"] == "svc-tiny" and job["model_version"] == "1"
        assert job["metrics"], "metrics are read back from the MLflow run"

        again = client.post("/jobs", json={"config": tiny_train_config("e2e-train", data=idx_data,
                                                                       register_as="svc-tiny"),
                                           "idempotency_key": "e2e-1"})
        assert again.status_code == 200 and again.json()["id"] == job_id

        model = client.get("/models/svc-tiny").json()
        assert [v["version"] for v in model["versions"]] == ["1"]
        assert model["versions"][0]["run_id"] == job["mlflow_run_id"] and model["versions"][0]["metrics"]
        promoted = client.put("/models/svc-tiny/aliases/champion", json={"version": "1"})
        assert promoted.status_code == 200 and promoted.json()["aliases"]["champion"] == "1"
        assert client.get("/models").json()[0]["name"] == "svc-tiny"

        ui = client.get("/health").json()["mlflow_ui"]
    # The job's log sends the user to the UI this service runs, not to start a second one.
    assert f"browse:      {ui}/#/runs/{job['mlflow_run_id']}" in log and "mlflow ui --backend-store-uri" not in log
    printed = service.output.read_text()
    assert f"attnlab API: {service.url}" in printed and f"MLflow UI: {ui}" in printed
    # The same version, seen by the MLflow server the service started.
    registered = httpx.get(f"{ui}/api/2.0/mlflow/registered-models/get", params={"name": "svc-tiny"}).json()
    assert {"alias": "champion", "version": "1"} in registered["registered_model"]["aliases"]

    env = {**os.environ, "ATTNLAB_URL": service.url, "ATTNLAB_TOKEN": TOKEN, "COLUMNS": "200"}
    listed = subprocess.run([sys.executable, "-m", "service.cli", "jobs", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and re.search(rf"{job_id}\s+train\s+e2e-train\s+SUCCEEDED", listed.stdout)
    shown = subprocess.run([sys.executable, "-m", "service.cli", "jobs", "show", str(job_id)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "svc-tiny version 1" in shown.stdout


def test_search_job_runs_its_trials(start_service, idx_data, tmp_path):
    """Submitted and followed through the CLI client (`attnlab jobs submit --search -f`)."""
    service = start_service()
    config = tiny_train_config("e2e-search", data=idx_data)
    # Two steps end before any validation: the trials report (and the best is picked and registered) on
    # the training loss.
    config["search"] = {"space": {"model.reduction": {"grid": [2, 4]}}, "algorithm": "grid",
                        "scheduler": {"kind": "fifo"}, "max_concurrent_trials": 1,
                        "metric": "train/loss", "mode": "min", "report_every_n_steps": 1}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ATTNLAB_URL": service.url, "ATTNLAB_TOKEN": TOKEN, "COLUMNS": "200"}
    followed = subprocess.run([sys.executable, "-m", "service.cli", "jobs", "submit", "--config", str(path),
                               "--search", "--set", "trainer.max_steps=2", "-f"],
                              env=env, capture_output=True, text=True, timeout=400)
    assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr[-2000:]
    assert "Submitted search 1 (e2e-search)" in followed.stdout
    assert "2 trials" in followed.stdout and "Job 1 SUCCEEDED" in followed.stdout
    with service.client() as client:
        job = client.get("/jobs/1").json()
    assert job["kind"] == "search" and job["state"] == "SUCCEEDED"
    parent = re.search(r"MLflow parent run ([0-9a-f]{32})", followed.stdout)
    assert parent and job["mlflow_run_id"] == parent.group(1)
    # What the search registered (its best trial's model) is recorded on the job.
    assert job["registered_model"] == "e2e-search" and job["model_version"] == "1"
    shown = subprocess.run([sys.executable, "-m", "service.cli", "jobs", "show", "1"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert "e2e-search version 1" in shown.stdout

    # The trials and the ablation table, as the API and the web page show them.
    with service.client() as client:
        trials = client.get("/jobs/1/trials").json()
        fragment = client.get("/ui/jobs/1").text
    assert trials["planned"] == 2 and trials["metric"] == "train/loss"
    assert sorted(trial["values"]["model.reduction"] for trial in trials["trials"]) == ["2", "4"]
    assert all(trial["status"] == "FINISHED" and trial["metric"] is not None for trial in trials["trials"])
    ablation = trials["ablation"]
    assert ablation["rows"] == ["se-stage4"] and ablation["columns"] == ["2", "4"]
    assert sum(cell["best"] for cell in ablation["cells"][0]) == 1
    assert 'data-role="trials"' in fragment and 'data-role="ablation"' in fragment and "2 of 2" in fragment
    assert "e2e-search v1" in fragment
