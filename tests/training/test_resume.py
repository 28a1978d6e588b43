"""A run killed with SIGKILL mid-epoch resumes from its last checkpoint into the same MLflow run and
finishes with the configured number of epochs and optimizer steps (none lost, none repeated)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

EPOCHS, BATCHES = 3, 8


def _train_command(path):
    return [sys.executable, "-m", "service.cli", "train", "--config", str(path)]


def _checkpoint_step(path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    except (FileNotFoundError, EOFError, RuntimeError):  # not written yet
        return -1


@pytest.mark.slow
def test_sigkilled_run_resumes_into_the_same_mlflow_run(idx_root, tmp_path, configs, attnlab_home):
    config = configs.image("resume-me", idx_root, "none", backbone="resnet18_small")
    config["trainer"].update(max_epochs=EPOCHS, limit_train_batches=BATCHES, limit_val_batches=1,
                             limit_test_batches=1, checkpoint_every_n_steps=2)
    config["tracking"].update(log_model=False, figures=False)
    path = configs.write(tmp_path / "run.yaml", config)
    last = attnlab_home / "runs" / "resume-me" / "checkpoints" / "last.ckpt"

    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(_train_command(path), stdout=log, stderr=subprocess.STDOUT)
        killed_at = -1
        deadline = time.monotonic() + 600  # generous: CI machines may be loaded
        while time.monotonic() < deadline and process.poll() is None:
            step = _checkpoint_step(last) if last.exists() else -1
            if step >= BATCHES + 2:  # inside epoch 1 (or at its end under heavy load)
                process.send_signal(signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.3)
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert BATCHES < killed_at < EPOCHS * BATCHES

    mlflow_client = client(default_tracking_uri())
    exp_id = experiment_id(default_tracking_uri(), "attnlab", create=False)
    runs = mlflow_client.search_runs([exp_id], f"tags.`{RUN_NAME_TAG}` = 'resume-me'")
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"
    run_id = runs[0].info.run_id

    second = subprocess.run(_train_command(path), capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming 'resume-me'" in second.stdout
    runs = mlflow_client.search_runs([exp_id], f"tags.`{RUN_NAME_TAG}` = 'resume-me'")
    assert [run.info.run_id for run in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert _checkpoint_step(last) == EPOCHS * BATCHES
    epochs_validated = mlflow_client.get_metric_history(run_id, "val/acc")
    assert len(epochs_validated) == EPOCHS
    assert sorted(m.step for m in epochs_validated) == [BATCHES * (e + 1) - 1 for e in range(EPOCHS)]
