"""`cluster.kind: ray`: the same training run on N Ray Train workers (Ray 2.60, Train V2).

The driver starts (or joins, `cluster.address`) a Ray cluster and runs a `TorchTrainer` whose workers
each call the local core, `training.local.run_training`, in the role of a Ray worker (`RayWorker`): the
Lightning Trainer there uses `RayDDPStrategy` + `RayLightningEnvironment` (ranks and world size come
from Ray), is checked by `prepare_trainer`, and reports a checkpoint per epoch with
`RayTrainReportCallback` into `cluster.storage_path` (default `$ATTNLAB_HOME/ray_results/<name>`).
The caller's Lightning callbacks travel to every worker. MLflow logging happens on the worker of world
rank 0 only (Lightning's loggers write from global rank 0), so one MLflow run results.

Resume: running the same name again with the same storage path lets Train V2 restore the run's
checkpoint manager from `<storage>/<name>/checkpoint_manager_snapshot.json`; workers continue from
`ray.train.get_checkpoint()` (epoch granularity, the same file on every worker, so ranks never disagree
about where they are). A checkpoint counts once the controller has registered it in that snapshot: a
driver killed between a worker's upload and the registration resumes from the checkpoint before
(tests/training/test_ray_resume.py kills the driver and its local cluster mid-run). A worker that dies
while the driver lives is Ray Train's to recover: up to `cluster.max_failures` times it restarts the
worker group from the last registered checkpoint (tests/faults/test_ray_worker_killed.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training import tracking
from training.local import FitResult, ProcessRole, completed_result, result_from_run, run_training

if TYPE_CHECKING:
    from training.config import TrainConfig


def fit_on_ray(cfg: TrainConfig, *, callbacks: list | None = None, run_callbacks: list | None = None) -> FitResult:
    """`callbacks`: Lightning callbacks for every worker; `run_callbacks`: Ray Train callbacks of the
    run (a Tune trial forwards the workers' reports with one)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    done = completed_result(cfg)
    if done is not None:
        return done
    uri = tracking.tracking_uri(cfg.tracking.uri)
    if uri == tracking.default_tracking_uri():
        tracking.experiment_id(uri, cfg.tracking.experiment)  # create it here, not racing in workers
    if not ray.is_initialized():
        ray.init(address=cfg.cluster.address, log_to_driver=True)
    storage = cfg.cluster.storage_path or str(tracking.attnlab_home() / "ray_results")
    resources = {"CPU": cfg.cluster.cpus_per_worker}
    if cfg.cluster.use_gpu:
        resources["GPU"] = 1
    worker_cfg = cfg.model_copy(deep=True)
    worker_cfg.tracking.uri = uri  # workers must write where the driver reads
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": worker_cfg.model_dump(mode="json"), "callbacks": list(callbacks or []),
                           "attnlab_home": str(tracking.attnlab_home())},
        scaling_config=ScalingConfig(num_workers=cfg.cluster.num_workers, use_gpu=cfg.cluster.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=cfg.name, storage_path=storage, callbacks=run_callbacks,
                             failure_config=FailureConfig(max_failures=cfg.cluster.max_failures)),
    )
    trainer.fit()  # raises ray.train.TrainingFailedError when a worker fails
    run = tracking.find_run(uri, cfg.tracking.experiment, cfg.name)
    if run is None:
        raise RuntimeError(f"Ray Train finished but no MLflow run named {cfg.name!r} exists in {uri}")
    return result_from_run(cfg, run)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Body of every Ray Train worker: the local training core in the role of a Ray worker."""
    os.environ["ATTNLAB_HOME"] = loop_config["attnlab_home"]
    from training.config import TrainConfig

    run_training(TrainConfig.model_validate(loop_config["config"]), callbacks=loop_config["callbacks"],
                 role=RayWorker())


class RayWorker(ProcessRole):
    """Ranks from Ray, Ray's DDP strategy and environment, per-epoch checkpoints reported to Ray Train."""

    def is_rank_zero(self) -> bool:
        import ray.train

        return ray.train.get_context().get_world_rank() == 0

    def resume_from(self, checkpoint_dir: Path) -> str | None:
        return None  # workers resume from the checkpoint Ray registered (trainer_setup)

    def trainer_setup(self, arguments: dict[str, Any], callbacks: list,
                      resume: str | None) -> tuple[dict[str, Any], list, str | None]:
        """Resume from Ray Train's registered checkpoint, not the local `last.ckpt`: every worker must
        start from the same one, and the storage path may be remote."""
        import ray.train
        from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback
        from ray.train.torch import get_device

        arguments = dict(arguments)
        arguments.update(strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()], devices="auto")
        arguments.pop("num_nodes", None)  # Ray places the workers; Lightning sees one process per worker
        if arguments.get("accelerator") == "auto" and get_device().type != "cuda":
            arguments["accelerator"] = "cpu"
        checkpoint = ray.train.get_checkpoint()
        resume = None
        if checkpoint is not None:
            # to_directory() copies from any storage (local folder, S3, ...) into a local temp folder.
            resume = str(Path(checkpoint.to_directory()) / RayTrainReportCallback.CHECKPOINT_NAME)
        return arguments, [*callbacks, RayTrainReportCallback()], resume

    def prepare(self, trainer):
        from ray.train.lightning import prepare_trainer

        return prepare_trainer(trainer)
