"""Fault 3: the disk fills up while a run writes checkpoints.

The run's folder ($ATTNLAB_HOME/runs) is a 32 MB tmpfs mounted by the test (it runs as root in CI
and here); once the run has written checkpoints, the test fills the tmpfs to the last byte. The
next checkpoint write must fail with one clear error naming the file, the OS error and the previous
checkpoint, which must still verify; no partial file may stay behind. After space is freed, the
same command resumes from that checkpoint into the same MLflow run and finishes.

Where mounting is not permitted (no CAP_SYS_ADMIN), the test sets RLIMIT_FSIZE on the training
process instead (writes past the limit fail with EFBIG), with a network whose checkpoint (45 MB)
is larger than any other file the process writes.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.faults.conftest import (attnlab, child_env, metric_steps, missing, recorded_step, report_lost, run_train,
                                   tiny_run, wait_until, write_config)
from training.checkpoints import inspect_checkpoint, resume_point
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

pytestmark = pytest.mark.slow
EPOCHS, BATCHES = 2, 8
TMPFS_BYTES = 32 << 20


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", f"attnlab-{uuid.uuid4().hex[:8]}",
                              str(folder)], capture_output=True)
    return mounted.returncode == 0


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem refuses (ENOSPC); returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        block = b"\0" * (1 << 20)
        while block:
            try:
                handle.write(block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                block = block[: len(block) // 2]
    return filler


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_resumes(fault_home, fault_data, tmp_path):
    runs = fault_home / "runs"
    use_tmpfs = _mount_tmpfs(runs)
    config_dict = tiny_run("disk-full", fault_data, epochs=EPOCHS, batches=BATCHES)
    if not use_tmpfs:
        config_dict["model"] = {"family": "none", "backbone": "resnet18_small"}
    config = write_config(tmp_path / "run.yaml", config_dict)
    folder = runs / "disk-full" / "checkpoints"
    try:
        with open(tmp_path / "first.log", "w") as log:
            first = subprocess.Popen(attnlab("train", "--config", str(config)), stdout=log,
                                     stderr=subprocess.STDOUT, env=child_env())
            wait_until(lambda: recorded_step(folder / "last.ckpt") >= 4, 300, "two checkpoints written",
                       interval=0.05, process=first)
            if use_tmpfs:
                filler = _fill(runs)
            else:
                limit = (folder / "last.ckpt").stat().st_size - 1
                resource.prlimit(first.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            first.wait(timeout=300)
        output = (tmp_path / "first.log").read_text()
        print(f"[fault] disk full simulated with {'a full 32 MB tmpfs' if use_tmpfs else 'RLIMIT_FSIZE'}")

        assert first.returncode == 1, output[-4000:]
        error_line = next(line for line in output.splitlines() if line.startswith("error: could not write checkpoint"))
        print(f"[fault] the run said: {error_line}")
        assert ("No space left on device (ENOSPC)" if use_tmpfs else "File too large (EFBIG)") in error_line
        intact = resume_point(folder)
        assert f"The previous checkpoint {intact} (step {recorded_step(Path(intact))}) is intact" in error_line
        assert not [path.name for path in folder.iterdir() if ".tmp-" in path.name]
        step_at_failure = recorded_step(Path(intact))
        assert step_at_failure >= 4

        if use_tmpfs:
            filler.unlink()
        resumed = run_train(config)
        resumed_output = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, resumed_output[-4000:]
        assert f"resuming 'disk-full' from {intact}" in resumed_output
        damaged = [path.name for path in folder.iterdir() if path.name.endswith((".ckpt", ".ckpt.prev"))
                   and inspect_checkpoint(path)[1] is not None]
    finally:
        if use_tmpfs:
            subprocess.run(["umount", "-l", str(runs)], check=False)

    uri = default_tracking_uri()
    mlflow = client(uri)
    found = mlflow.search_runs([experiment_id(uri, "attnlab", create=False)], f"tags.`{RUN_NAME_TAG}` = 'disk-full'")
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    run_id = found[0].info.run_id
    report_lost("disk full while writing a checkpoint", {
        "epochs never validated": missing([BATCHES * (e + 1) - 1 for e in range(EPOCHS)],
                                          metric_steps(mlflow, run_id, "val/acc")),
        "training steps with no logged loss": missing(range(EPOCHS * BATCHES - 1),
                                                      metric_steps(mlflow, run_id, "train/loss")),
        "MLflow runs beyond the one": len(found) - 1,
        "checkpoints left damaged": damaged,
    })
