"""An idle `attnlab serve` runs only what it uses: no MLflow job queue, no model checker left holding torch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.service.conftest import tiny_train_config

pytestmark = pytest.mark.slow


def process_tree(pid: int) -> dict[int, str]:
    """{pid: command line} of `pid` and all its descendants (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    tree, todo = {}, [pid]
    while todo:
        current = todo.pop()
        try:
            tree[current] = Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo += parents.get(current, [])
    return tree


def test_idle_service_runs_the_mlflow_ui_without_its_job_queue_and_lets_the_checker_go(start_service):
    service = start_service(slots=0, mlflow_ui="true", model_checker_idle_seconds=3)
    with service.client() as client:
        health = client.get("/health").json()
        # Where the UI is, known from the first answer (its first start takes 20-40 s).
        assert health["mlflow_ui"] and health["mlflow_ui"].startswith("http://127.0.0.1:")
        assert f"MLflow UI: {health['mlflow_ui']}" in service.output.read_text()
        deadline = time.monotonic() + 180
        while not client.get("/health").json()["mlflow_ui_ready"]:
            assert time.monotonic() < deadline, (service.home / "mlflow-ui.log").read_text()[-2000:]
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while any("service.model_checker" in command for command in process_tree(service.process.pid).values()):
            assert time.monotonic() < deadline, "the model checker did not exit when idle"
            time.sleep(0.5)
        commands = list(process_tree(service.process.pid).values())
        assert any("mlflow server" in command for command in commands)
        assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
        # The next submission starts the checker again and is validated as before.
        bad = client.post("/jobs", json={"config": {**tiny_train_config("idle"),
                                                    "model": {"family": "se", "backbone": "resnet18_small",
                                                              "placement": "res9"}}})
        good = client.post("/jobs", json={"config": tiny_train_config("idle")})
    assert bad.status_code == 422 and "model.placement" in bad.json()["message"]
    assert good.status_code == 201
