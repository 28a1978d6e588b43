"""Fault 7: `attnlab serve` gets SIGTERM (a deploy, `docker stop`, systemd) while jobs run.

Documented behaviour (README, service/supervisor.py): the API stops accepting requests, lets open
ones finish for up to 5 s (a followed log stream is then closed), stops supervising, and ends by
the signal (status 143).
Running jobs are left running — each is its own process group — and the next `attnlab serve`
re-adopts them from the job table (same attempt, same process); queued jobs stay queued and run
later. The test freezes the running job (SIGSTOP) across the restart so it is certainly still
running when the new service looks, then lets it go on.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time

import httpx
import pytest

from tests.faults.conftest import recorded_step, report_lost, tiny_run, wait_until
from tests.service.conftest import TOKEN, launch_service
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri

pytestmark = pytest.mark.slow
NAMES = ("sigterm-running", "sigterm-queued")


def _stored(home, job_id: int) -> tuple[str, int, dict]:
    with sqlite3.connect(home / "jobs.db") as db:
        state, attempts, handle = db.execute("SELECT state, attempts, handle FROM jobs WHERE id = ?",
                                             (job_id,)).fetchone()
    return state, attempts, json.loads(handle) if handle else {}


def _signal_group(pid: int, signum: int) -> None:
    os.killpg(pid, signum)


def test_sigterm_stops_the_api_and_leaves_running_jobs_to_be_readopted(fault_home, fault_data):
    service = launch_service(fault_home, fault_data, slots=1)
    configs = [tiny_run(name, fault_data, epochs=2, batches=8) for name in NAMES]
    with service.client() as http:
        ids = [http.post("/jobs", json={"config": config}).json()["id"] for config in configs]
    running = ids[:1]
    checkpoint = fault_home / "runs" / NAMES[0] / "checkpoints" / "last.ckpt"
    wait_until(lambda: recorded_step(checkpoint) >= 2, 300, "the first job is training")
    pids = [_stored(fault_home, job_id)[2]["pid"] for job_id in running]
    for pid in pids:
        _signal_group(pid, signal.SIGSTOP)

    stream_ended = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", f"{service.url}/jobs/{running[0]}/logs", params={"follow": "true"},
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as response:
                for _ in response.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass  # the server closed the stream on shutdown
        stream_ended.set()

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(1.0)  # the stream is open
    stopping = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    exit_code = service.process.wait(timeout=60)
    stop_seconds = time.monotonic() - stopping
    log = service.output.read_text()
    # uvicorn shuts down, then ends by the signal it was sent (status 143 to a shell, -15 here).
    assert exit_code == -signal.SIGTERM and "Application shutdown complete" in log, log[-3000:]
    assert stream_ended.wait(10), "the followed log stream was left hanging"
    for pid in pids:
        os.kill(pid, 0)  # still alive (frozen)
    assert [_stored(fault_home, job_id)[0] for job_id in ids] == ["RUNNING", "QUEUED"]

    service.start()
    try:
        time.sleep(1.0)  # a few supervisor passes over the adopted jobs
        adopted = [_stored(fault_home, job_id) for job_id in running]
        assert [(state, attempts, handle["pid"]) for state, attempts, handle in adopted] == [
            ("RUNNING", 1, pid) for pid in pids]
        for pid in pids:
            _signal_group(pid, signal.SIGCONT)
        done = [service.wait_for(job_id, ("SUCCEEDED", "FAILED"), timeout=300) for job_id in ids]
    finally:
        for pid in pids:
            try:
                _signal_group(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        service.stop()

    mlflow = client(default_tracking_uri())
    experiment = mlflow.get_experiment_by_name("attnlab").experiment_id
    runs = {name: mlflow.search_runs([experiment], f"tags.`{RUN_NAME_TAG}` = '{name}'") for name in NAMES}
    print(f"\n[fault] SIGTERM: the API shut down in {stop_seconds:.1f} s; job {running[0]} re-adopted, job {ids[1]} "
          "ran after the restart")
    report_lost("service SIGTERM while a job runs and one waits", {
        "jobs not SUCCEEDED": [job["id"] for job in done if job["state"] != "SUCCEEDED"],
        "jobs launched more than once": [job["id"] for job in done if job["attempts"] != 1],
        "MLflow runs missing or duplicated": [name for name, found in runs.items() if len(found) != 1],
    })
