"""A Ray Train run whose driver is SIGKILLed (with the local cluster it started) resumes, when run again
under the same name, from the last checkpoint it reported into the storage path — into the same MLflow run,
every epoch validated once, none from scratch."""

import os
import signal
import subprocess
import sys
import time

import pytest

from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

EPOCHS, BATCHES = 3, 6


def _kill_session(session: int) -> None:
    """SIGKILL every process of the driver's session: the driver, and the Ray cluster it started."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.mark.slow
def test_killed_ray_train_run_resumes_from_its_reported_checkpoint(idx_root, tmp_path, configs, attnlab_home):
    config = configs.image("ray-resume", idx_root, "none", backbone="resnet18_small")
    config["trainer"].update(max_epochs=EPOCHS, limit_train_batches=BATCHES, limit_val_batches=1,
                             limit_test_batches=1)
    config["tracking"].update(log_model=False, figures=False)
    storage = tmp_path / "ray-storage"
    config["cluster"] = {"kind": "ray", "num_workers": 2, "cpus_per_worker": 1, "storage_path": str(storage)}
    command = [sys.executable, "-m", "service.cli", "train", "--config", str(configs.write(tmp_path / "run.yaml",
                                                                                         config))]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}

    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                  start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            # Ray resumes from the checkpoints its controller registered: those in this snapshot.
            if (storage / "ray-resume" / "checkpoint_manager_snapshot.json").exists():
                break  # epoch 1 reported and registered: kill mid-run
            time.sleep(0.2)
        _kill_session(driver.pid)
        driver.wait()
    first_log = (tmp_path / "first.log").read_text()
    assert driver.returncode == -signal.SIGKILL, first_log[-3000:]

    uri = default_tracking_uri()
    exp_id = experiment_id(uri, "attnlab", create=False)
    runs = client(uri).search_runs([exp_id], f"tags.`{RUN_NAME_TAG}` = 'ray-resume'")
    assert len(runs) == 1 and runs[0].info.status == "RUNNING", first_log[-3000:]
    run_id = runs[0].info.run_id
    assert len(client(uri).get_metric_history(run_id, "val/acc")) < EPOCHS  # killed before the end

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment,
                            start_new_session=True)
    output = second.stdout + second.stderr
    (tmp_path / "second.log").write_text(output)
    assert second.returncode == 0, output[-4000:]
    assert "resuming 'ray-resume' from" in output and "checkpoint.ckpt" in output
    runs = client(uri).search_runs([exp_id], f"tags.`{RUN_NAME_TAG}` = 'ray-resume'")
    assert [run.info.run_id for run in runs] == [run_id] and runs[0].info.status == "FINISHED"
    # Steps of the validated epochs: each epoch once (an epoch killed before its checkpoint may log twice,
    # at the same step), none from a restart at step 0.
    steps = {metric.step for metric in client(uri).get_metric_history(run_id, "val/acc")}
    assert steps == {BATCHES * (epoch + 1) - 1 for epoch in range(EPOCHS)}
