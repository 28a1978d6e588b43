"""Fault 2: damaged checkpoints on resume.

A run is SIGKILLed in its second epoch; then its newest checkpoint is truncated and the next newest
has one bit flipped on disk. Running it again must name both files in warnings, resume from the
newest checkpoint that is still whole (never a crash, never a silent restart from step 0), and
finish in the same MLflow run with every epoch validated.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.faults.conftest import (attnlab, child_env, metric_steps, missing, recorded_step, report_lost, run_train,
                                   tiny_run, wait_until, write_config)
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

pytestmark = pytest.mark.slow
EPOCHS, BATCHES = 3, 8


def _checkpoints_newest_first(folder):
    files = [path for path in folder.iterdir() if path.name.endswith((".ckpt", ".ckpt.prev"))]
    return sorted(files, key=recorded_step, reverse=True)


def test_resume_steps_over_truncated_and_bit_flipped_checkpoints(fault_home, fault_data, tmp_path):
    config = write_config(tmp_path / "run.yaml", tiny_run("corrupt", fault_data, epochs=EPOCHS, batches=BATCHES))
    folder = fault_home / "runs" / "corrupt" / "checkpoints"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(attnlab("train", "--config", str(config)), stdout=log, stderr=subprocess.STDOUT,
                                 env=child_env())
        # Inside epoch 2: last.ckpt, last.ckpt.prev (an older step) and epoch 1's best-*.ckpt exist.
        wait_until(lambda: recorded_step(folder / "last.ckpt") >= BATCHES + 4, 300, "a checkpoint in epoch 2",
                   interval=0.05, process=first)
        first.send_signal(signal.SIGKILL)
        first.wait()

    newest, second, third = _checkpoints_newest_first(folder)[:3]
    assert recorded_step(newest) > recorded_step(second) > recorded_step(third) >= BATCHES
    size = newest.stat().st_size
    with open(newest, "r+b") as handle:
        handle.truncate(size // 2)
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0x01
    second.write_bytes(bytes(data))

    resumed = run_train(config)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    assert f"checkpoint {newest} is damaged" in output and "truncated" in output
    assert f"checkpoint {second} is damaged" in output and "bytes changed on disk" in output
    assert f"resuming 'corrupt' from {third}" in output

    uri = default_tracking_uri()
    mlflow = client(uri)
    runs = mlflow.search_runs([experiment_id(uri, "attnlab", create=False)], f"tags.`{RUN_NAME_TAG}` = 'corrupt'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    validated = metric_steps(mlflow, run_id, "val/acc")
    expected_validations = [BATCHES * (epoch + 1) - 1 for epoch in range(EPOCHS)]
    trained = metric_steps(mlflow, run_id, "train/loss")
    assert recorded_step(folder / "last.ckpt") == EPOCHS * BATCHES
    report_lost("truncated last.ckpt + bit-flipped last.ckpt.prev on resume", {
        "epochs never validated": missing(expected_validations, validated),
        "training steps with no logged loss": missing(range(EPOCHS * BATCHES - 1), trained),
        "MLflow runs beyond the one": len(runs) - 1,
    })
