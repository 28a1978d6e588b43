"""`attnlab data check`: table, JSON and MLflow run from one probe of every file; the second check is answered by
the probe cache; training logs the same report into its own run."""

import json
import shutil

import pytest
import yaml

from service.cli import main
from training import tracking
from training.config import load_config
from training.data_check import RUN_SUFFIX
from training.fit import fit


def _check_config(tmp_path, root, uri, **data):
    config = {"name": "clips", "data": {"kind": "video", "dataset": "folder", "root": str(root), "clip_len": 4,
                                        "frame_interval": 2, "short_side": 32, "crop_size": 32,
                                        "split_fractions": [0.5, 0.25, 0.25], **data},
              "model": {"family": "none", "backbone": "c2d_resnet_tiny"},  # any run config: only data is read
              "tracking": {"uri": uri}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_prints_writes_and_logs_the_report_and_the_second_run_is_cached(tmp_path, video_root, shared_mlflow_uri,
                                                                               capsys):
    root = shutil.copytree(video_root, tmp_path / "videos")
    (root / "up" / "broken.mp4").write_bytes(b"")
    config = _check_config(tmp_path, root, shared_mlflow_uri)
    assert main(["data", "check", "--config", str(config), "--json", str(tmp_path / "first.json")]) == 0
    out = capsys.readouterr().out
    assert "folder layout" in out and "empty: 1" in out and "MLflow run:" in out
    first = json.loads((tmp_path / "first.json").read_text())
    assert (first["files"], first["bad_files"], first["from_probe_cache"]) == (9, 1, 0)
    assert sum(split["bad_files"].get("empty", 0) for split in first["splits"].values()) == 1

    assert main(["data", "check", "--config", str(config), "--json", str(tmp_path / "second.json")]) == 0
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["from_probe_cache"] == 8  # every good file; the broken one is probed again (it may be fixed)
    assert {**second, "from_probe_cache": 0} == first

    run = tracking.find_run(shared_mlflow_uri, "attnlab", "clips" + RUN_SUFFIX)  # one run per name, two checks
    client = tracking.client(shared_mlflow_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "data_check/files")] == [0, 1]
    assert run.data.tags["attnlab.data_check.verdict"].startswith("training stops: 1 of 9 samples are bad")
    logged = json.loads(open(client.download_artifacts(run.info.run_id, "data_check/summary.json")).read())
    assert logged == second


def test_check_refuses_what_it_cannot_read(tmp_path, capsys):
    config = tmp_path / "image.yaml"
    config.write_text(yaml.safe_dump({"name": "img", "data": {"kind": "image", "dataset": "fashion_mnist"}}))
    assert main(["data", "check", "--config", str(config), "--no-mlflow"]) == 2
    assert "data.kind: 'image' is not one of video" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"data": {"kind": "video", "root": str(tmp_path), "dataset": "ucf101"}}))
    assert main(["data", "check", "--config", str(config), "--no-mlflow"]) == 2
    assert "no classInd.txt" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end training run
def test_training_logs_the_same_report(tmp_path, video_root, shared_mlflow_uri, configs):
    config = configs.video("report-in-training", video_root)
    config["tracking"].update(uri=shared_mlflow_uri, log_model=False, figures=False)
    cfg = load_config(configs.write(tmp_path / "run.yaml", config))
    result = fit(cfg)
    client = tracking.client(shared_mlflow_uri)
    logged = json.loads(open(client.download_artifacts(result.run_id, "data_check/summary.json")).read())
    assert main(["data", "check", "--config", str(tmp_path / "run.yaml"), "--json", str(tmp_path / "check.json"),
                 "--no-mlflow"]) == 0
    checked = json.loads((tmp_path / "check.json").read_text())
    assert {**logged, "from_probe_cache": 0} == {**checked, "from_probe_cache": 0}
    assert logged["splits"]["train"]["usable_samples"] == 4 and logged["verdict"] == "ok"
