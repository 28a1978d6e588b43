"""Each block family trains a few steps end to end from a YAML config on CPU and its MLflow run holds
params, metrics, the config, the family's figures and a model that predicts on any batch size."""

import mlflow
import numpy as np
import pytest
import yaml

from training import fit
from training.config import load_config
from training.tracking import COMPLETE_TAG, RUN_NAME_TAG, client

pytestmark = pytest.mark.slow  # end-to-end training runs, ~1 min each on 2 cores

FAMILY_FIGURES = {
    "se": {"se_excitation_per_channel.png", "se_excitation_per_stage.png"},
    "selfattn": {"selfattn_attention_centres.png", "selfattn_attention_probabilities.png"},
    "nonlocal": {"nonlocal_attention_res3_1_post.png", "nonlocal_attention_res4_5_post.png"},
    "none": set(),
}

CASES = {
    "se": dict(backbone="resnet18_small", placement="se-all", reduction=8),
    "selfattn": dict(backbone="resnet18_small", placement="sa-stage4", block={"heads": 4}),
    "none": dict(backbone="resnet18_small"),
}


def _artifact_files(mlflow_client, run_id, path=""):
    files = []
    for item in mlflow_client.list_artifacts(run_id, path):
        files += _artifact_files(mlflow_client, run_id, item.path) if item.is_dir else [item.path]
    return files


def _check_run(result, family, cfg, shapes):
    mlflow_client = client(result.tracking_uri)
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags[RUN_NAME_TAG] == cfg.name and run.data.tags[COMPLETE_TAG] == "true"
    assert run.data.params["model.family"] == family
    assert run.data.params["optim.lr"] == str(cfg.optim.lr)
    for metric in ("train/loss", "val/acc", "test/acc"):
        assert metric in run.data.metrics, metric
    assert len(mlflow_client.get_metric_history(result.run_id, "train/loss")) >= 2  # per step
    files = _artifact_files(mlflow_client, result.run_id)
    with open(mlflow_client.download_artifacts(result.run_id, "config/train.yaml")) as logged_file:
        logged = yaml.safe_load(logged_file)
    assert logged["model"]["family"] == family and logged["name"] == cfg.name
    figures = {f.split("/")[-1] for f in files if f.startswith("figures/")}
    assert figures == FAMILY_FIGURES[family]
    assert any(f.startswith("checkpoints/") for f in files)

    mlflow.set_tracking_uri(result.tracking_uri)
    model_uri = f"runs:/{result.run_id}/model" if result.model_version is None else \
        f"models:/{cfg.tracking.register_as}/{result.model_version}"
    model = mlflow.pyfunc.load_model(model_uri)
    for batch in (2, 3):
        prediction = model.predict(np.random.rand(batch, *shapes).astype(np.float32))
        assert np.asarray(prediction).shape[0] == batch


@pytest.mark.parametrize("family", sorted(CASES))
def test_image_family_trains_and_logs_to_mlflow(family, idx_root, shared_mlflow_uri, tmp_path, configs):
    config = configs.image(f"{family}-image", idx_root, family, **CASES[family])
    config["tracking"].update(uri=shared_mlflow_uri, register_as=f"{family}-image-model")
    cfg = load_config(configs.write(tmp_path / "run.yaml", config))
    result = fit(cfg)
    assert result.model_version == "1"
    assert 0.0 <= result.metrics["test/acc"] <= 1.0 and "test/acc_top5" in result.metrics
    assert sum(k.startswith("test/acc_class/") for k in result.metrics) == 10
    _check_run(result, family, cfg, (1, 28, 28))


def test_nonlocal_trains_on_video_clips_with_multi_clip_test(video_root, shared_mlflow_uri, tmp_path, configs):
    config = configs.video("nonlocal-video", video_root)
    config["tracking"]["uri"] = shared_mlflow_uri
    cfg = load_config(configs.write(tmp_path / "run.yaml", config))
    result = fit(cfg)
    assert "test/acc" in result.metrics and "test/acc_top5" not in result.metrics  # 2 classes
    _check_run(result, "nonlocal", cfg, (3, 4, 32, 32))


def test_finished_run_is_reported_not_repeated(idx_root, shared_mlflow_uri, tmp_path, configs):
    config = configs.image("repeat-me", idx_root, "none", backbone="resnet18_small")
    config["tracking"].update(uri=shared_mlflow_uri, log_model=False, figures=False)
    config["trainer"]["limit_train_batches"] = 1
    cfg = load_config(configs.write(tmp_path / "run.yaml", config))
    first = fit(cfg)
    again = fit(cfg)
    assert again.already_complete and again.run_id == first.run_id
    assert again.metrics["test/acc"] == pytest.approx(first.metrics["test/acc"])
