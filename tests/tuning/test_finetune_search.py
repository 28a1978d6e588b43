"""A Ray Tune trial that fine-tunes a registered model on data with another class count (model.init)."""

import pytest

pytestmark = pytest.mark.slow


def image_raw(name: str, root, **extra) -> dict:
    return {
        "name": name,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": str(root), "batch_size": 16,
                 "num_workers": 0, "augment": False},
        "model": {"family": "se", "backbone": "resnet_tiny", "placement": "se-stage4", "reduction": 4},
        "optim": {"lr": 0.05},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "max_steps": 3, "limit_val_batches": 1,
                    "limit_test_batches": 1, "log_every_n_steps": 1, "enable_progress_bar": False},
        "tracking": {"experiment": "finetune-search", "figures": False},
        **extra,
    }


def test_a_tune_trial_finetunes_a_registered_model_and_its_run_names_the_source(attnlab_home, tmp_path):
    import ray

    from datamodules.synthetic import write_idx_dataset
    from training import tracking
    from training.config import validate_config
    from training.fit import fit
    from training.init_tracking import FINETUNED_FROM_TAG
    from tuning.config import validate_search_config
    from tuning.search import run_search

    ten = write_idx_dataset(tmp_path / "ten", train=48, test=16, num_classes=10)
    four = write_idx_dataset(tmp_path / "four", train=48, test=16, num_classes=4)
    source = image_raw("tune-source", ten)
    source["tracking"]["register_as"] = "tune-source-model"
    fit(validate_config(source))

    raw = image_raw("tune-finetune", four, search={
        "space": {"model.init.new_lr_multiplier": {"grid": [10.0]}}, "algorithm": "grid",
        "metric": "train/loss", "mode": "min", "scheduler": {"kind": "fifo"}, "resources": {"cpu": 1},
        "max_concurrent_trials": 1})
    raw["model"]["init"] = {"source": "models:/tune-source-model@candidate", "freeze": "stem"}
    raw["tracking"]["register_as"] = "tune-finetuned-model"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_search(validate_search_config(raw))
    finally:
        ray.shutdown()

    assert [trial["finished"] for trial in result.trials] == [True]
    uri = tracking.default_tracking_uri()
    client = tracking.client(uri)
    trial_run = client.get_run(result.trials[0]["run_id"])
    assert trial_run.data.tags["attnlab.init.model_uri"] == "models:/tune-source-model/1"
    assert trial_run.data.params["model.init.new_lr_multiplier"] == "10.0"
    assert [a.path for a in client.list_artifacts(trial_run.info.run_id, "init")] == [
        "init/loading_report.json", "init/loading_report.txt"]
    assert result.model_name == "tune-finetuned-model"
    version = client.get_model_version(result.model_name, result.model_version)
    assert version.tags[FINETUNED_FROM_TAG] == "models:/tune-source-model/1"
