"""`cluster.kind: ray` runs the same training through Ray Train (2 CPU workers on a local cluster),
reports checkpoints into the storage path and logs one MLflow run from the rank-0 worker."""

import lightning.pytorch as pl
import pytest

from training import fit
from training.config import load_config
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id


@pytest.mark.slow
def test_ray_train_with_two_cpu_workers_logs_to_mlflow(idx_root, tmp_path, configs, attnlab_home):
    import ray

    config = configs.image("ray-run", idx_root, "se", backbone="resnet18_small", placement="se-stage4")
    config["trainer"]["max_epochs"] = 2
    config["tracking"].update(log_model=False)
    config["cluster"] = {"kind": "ray", "num_workers": 2, "cpus_per_worker": 1,
                         "storage_path": str(tmp_path / "ray-storage")}
    cfg = load_config(configs.write(tmp_path / "run.yaml", config))
    seen = tmp_path / "steps-seen"
    seen.mkdir()

    class StepsSeen(pl.Callback):
        """Defined here so that it travels to the workers pickled by value (they cannot import tests)."""

        def on_train_batch_end(self, trainer, *args):
            (seen / f"rank-{trainer.global_rank}").write_text(str(trainer.global_step))

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        result = fit(cfg, callbacks=[StepsSeen()])
    finally:
        ray.shutdown()

    uri = default_tracking_uri()
    runs = client(uri).search_runs([experiment_id(uri, "attnlab", create=False)])
    assert [run.info.run_id for run in runs] == [result.run_id]
    assert runs[0].data.tags[RUN_NAME_TAG] == "ray-run"
    assert "test/acc" in result.metrics and "val/acc" in result.metrics
    assert len(client(uri).get_metric_history(result.run_id, "val/acc")) == 2
    assert "se_excitation_per_channel.png" in {a.path.split("/")[-1] for a in client(uri).list_artifacts(
        result.run_id, "figures")}
    reported = list((tmp_path / "ray-storage" / "ray-run").glob("checkpoint_*"))
    assert reported, "Ray Train kept no checkpoint in the storage path"
    # fit's callbacks reach every Ray Train worker, not only the local path
    assert {path.name: int(path.read_text()) for path in seen.iterdir()} == {"rank-0": 6, "rank-1": 6}
