"""`fit(cfg, callbacks=...)` hands the caller's Lightning callbacks to the run; Ray Train callbacks need Ray."""

import lightning.pytorch as pl
import pytest

from training import fit
from training.config import load_config


def test_ray_train_callbacks_on_a_local_run_are_refused_not_dropped(idx_root, tmp_path, configs):
    cfg = load_config(configs.write(tmp_path / "run.yaml", configs.image("local", idx_root, "none",
                                                                         backbone="resnet18_small")))
    with pytest.raises(ValueError, match="run_callbacks are Ray Train callbacks: they need cluster.kind 'ray', "
                                         "this run has 'local'"):
        fit(cfg, run_callbacks=[object()])


@pytest.mark.slow  # an end-to-end training run
def test_a_local_run_calls_the_callers_lightning_callbacks(idx_root, shared_mlflow_uri, tmp_path, configs):
    config = configs.image("with-callback", idx_root, "none", backbone="resnet18_small")
    config["tracking"].update(uri=shared_mlflow_uri, log_model=False, figures=False)
    cfg = load_config(configs.write(tmp_path / "run.yaml", config))
    steps: list[int] = []

    class StepsSeen(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            steps.append(trainer.global_step)

    fit(cfg, callbacks=[StepsSeen()])
    assert steps == [1, 2, 3]  # limit_train_batches 3, one epoch
