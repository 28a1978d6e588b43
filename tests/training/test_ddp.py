"""A real 2-process DDP run (gloo on CPU, launched by Lightning from `attnlab train`) writes exactly one
MLflow run, from rank 0, whose test accuracy is synced over both ranks' halves of the test set."""

import subprocess
import sys

import pytest
import torch

from training.config import load_config
from training.fit import build_parts
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_logs_one_run_with_synced_metrics(idx_root, tmp_path, configs):
    config = configs.image("ddp-run", idx_root, "se", backbone="resnet18_small", placement="se-stage4")
    config["trainer"].update(devices=2, strategy="ddp", limit_test_batches=None, limit_val_batches=None)
    config["tracking"].update(log_model=False)
    path = configs.write(tmp_path / "run.yaml", config)

    done = subprocess.run([sys.executable, "-m", "service.cli", "train", "--config", str(path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("MLflow run:") == 1  # only rank 0 prints the summary

    uri = default_tracking_uri()
    runs = client(uri).search_runs([experiment_id(uri, "attnlab", create=False)])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags[RUN_NAME_TAG] == "ddp-run" and run.data.params["trainer.devices"] == "2"
    assert {"se_excitation_per_channel.png"} <= {a.path.split("/")[-1] for a in client(uri).list_artifacts(
        run.info.run_id, "figures")}

    # The logged accuracy is over the whole test set (48 images = 24 per rank), not rank 0's half.
    cfg = load_config(path)
    datamodule, module = build_parts(cfg)
    checkpoint = torch.load(run.data.tags["attnlab.checkpoint"], map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    datamodule.setup("test")
    correct = total = 0
    with torch.no_grad():
        for x, y in datamodule.test_dataloader():
            correct += (module(x).argmax(-1) == y).sum().item()
            total += len(y)
    assert total == 48
    assert run.data.metrics["test/acc"] == pytest.approx(correct / total, abs=1e-6)
