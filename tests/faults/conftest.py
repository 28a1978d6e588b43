"""Shared parts of the fault-injection tests: a tiny fast run, real `attnlab train` processes, and a
report of what each fault lost (every test prints it; every test asserts it is nothing).

The network is `attention_net_tiny` (17k parameters: a 160 kB checkpoint, ~10 steps/s on a CI core),
so a test spends its time on the fault, not on training. A migrated MLflow SQLite store is made once
per session and copied into each test's home (creating one costs ~15 s on two cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def tiny_run(name: str, data_root: Path, *, epochs: int = 3, batches: int = 8, every: int = 2) -> dict:
    """A run of `epochs` × `batches` steps that checkpoints every `every` steps and validates each epoch."""
    return {
        "name": name,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": str(data_root), "batch_size": 16,
                 "num_workers": 0, "augment": False},
        "model": {"family": "selfattn", "backbone": "attention_net_tiny"},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": epochs, "limit_train_batches": batches,
                    "limit_val_batches": 1, "limit_test_batches": 1, "log_every_n_steps": 1,
                    "checkpoint_every_n_steps": every, "enable_progress_bar": False},
        "tracking": {"log_model": False, "figures": False},
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def attnlab(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *arguments]


def child_env(**extra: str) -> dict[str, str]:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")]))
    return environment


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1, process=None):
    """Poll `predicate` until it returns something truthy; fail naming `what` (and a dead process's exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}) before: {what}")
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout:.0f} s: {what}")


def recorded_step(checkpoint: Path) -> int:
    """The global step the checkpoint's sidecar records; -1 when there is none yet."""
    try:
        return json.loads((checkpoint.parent / (checkpoint.name + ".sha256")).read_text())["global_step"]
    except (OSError, ValueError, KeyError):
        return -1


def report_lost(fault: str, lost: dict[str, object]) -> None:
    """Print what the fault lost, one line per kind; empty lists and zeros mean nothing was lost."""
    print(f"\n[fault] {fault}")
    for what, value in lost.items():
        print(f"[fault]   lost {what}: {value if value else 'nothing'}")
    assert not any(lost.values()), f"{fault} lost: {lost}"


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


def missing(expected, present) -> list:
    return sorted(set(expected) - set(present))


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory) -> Path:
    from datamodules.synthetic import write_idx_dataset

    return write_idx_dataset(tmp_path_factory.mktemp("fault-idx"), train=192, test=32, num_classes=10)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def fault_home(attnlab_home: Path, migrated_mlflow_db: Path) -> Path:
    """This test's ATTNLAB_HOME with an already-migrated embedded MLflow store."""
    shutil.copy(migrated_mlflow_db, attnlab_home / "mlflow.db")
    return attnlab_home


def run_train(config: Path, *, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(attnlab("train", "--config", str(config)), capture_output=True, text=True,
                          timeout=timeout, env=child_env(**env), cwd=PROJECT_ROOT)
