"""The local training core: one process's part of a run, and the run's result.

config -> DataModule -> backbone with blocks at the placement -> the family's LightningModule ->
Trainer (devices/strategy/nodes from the config) -> MLflow (params, metrics per step/epoch, the
resolved config, the dataset report of `attnlab data check` and data-quality counts, the family's
figures, checkpoints, the bare network and the raw-input classifier with its contract) -> optional
registration of the classifier under a name with an alias. `training.fit.fit` runs it in this process;
the Ray Train path (training/ray_train.py) runs it in each worker with a `ProcessRole` of its own —
this module never imports the Ray path.

Resume: a run is known by its name. Checkpoints live in `$ATTNLAB_HOME/runs/<name>/checkpoints`;
`last.ckpt` is rewritten every `trainer.checkpoint_every_n_steps` optimizer steps and at every epoch
end, atomically and with a checksum (training/checkpoints.py; the one before is kept as
`last.ckpt.prev`). Running the same name again continues from the newest valid checkpoint (a damaged
one is named in a warning and skipped) into the same MLflow run (found by the tag `attnlab.run_name`);
`training.fit.fit` lets one process train a name at a time (training/run_lock.py). After a `kill -9` in the middle of an epoch, training resumes mid-epoch at the
last saved step: the global step, epoch and the optimizer/scheduler state continue where they were;
the epoch's remaining batches are then drawn from a fresh pass over the data loader (Lightning cannot
restore a plain DataLoader's position), so at most `checkpoint_every_n_steps` steps are redone and
no epoch is lost or repeated. A run that already finished is not repeated: its result is returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training import hardware, init_tracking, tracking

if TYPE_CHECKING:
    from training.config import TrainConfig


@dataclass
class FitResult:
    name: str
    metrics: dict[str, float]
    checkpoint: str | None  # best checkpoint (last when nothing is monitored)
    run_id: str | None
    model_version: str | None = None
    tracking_uri: str = ""
    already_complete: bool = False  # the named run had finished before: nothing was trained
    figures: list[str] = field(default_factory=list)


def completed_result(cfg: TrainConfig) -> FitResult | None:
    """The stored result when a run of this name already finished, else None."""
    uri = tracking.tracking_uri(cfg.tracking.uri)
    run = tracking.find_run(uri, cfg.tracking.experiment, cfg.name)
    if run is None or run.data.tags.get(tracking.COMPLETE_TAG) != "true":
        return None
    return result_from_run(cfg, run, already_complete=True)


def result_from_run(cfg: TrainConfig, run, already_complete: bool = False) -> FitResult:
    tags = run.data.tags
    return FitResult(name=cfg.name, metrics=dict(run.data.metrics), checkpoint=tags.get(tracking.CHECKPOINT_TAG),
                     run_id=run.info.run_id, model_version=tags.get(tracking.VERSION_TAG),
                     tracking_uri=tracking.tracking_uri(cfg.tracking.uri), already_complete=already_complete)


class ProcessRole:
    """How this process takes part in a run. This default: a process Lightning launches itself (the
    only one, or a DDP rank); a Ray Train worker swaps in its own role (training/ray_train.py)."""

    def is_rank_zero(self) -> bool:
        # Lightning's DDP launcher re-runs this program for ranks > 0 with these variables set.
        return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))

    def resume_from(self, checkpoint_dir: Path) -> str | None:
        """The local checkpoint to continue from: the newest valid one (training/checkpoints.py)."""
        from training.checkpoints import resume_point

        return resume_point(checkpoint_dir)

    def trainer_setup(self, arguments: dict[str, Any], callbacks: list,
                      resume: str | None) -> tuple[dict[str, Any], list, str | None]:
        """Trainer arguments, callbacks and the checkpoint to resume from, adjusted for this process."""
        return arguments, callbacks, resume

    def prepare(self, trainer):
        """The Trainer, checked or wrapped for this process before fitting."""
        return trainer


def build_parts(cfg: TrainConfig):
    """(datamodule after setup("fit"), the family's LightningModule over the built network)."""
    from datamodules import build_datamodule
    from modules.lightning import MODULES
    from training import init_weights

    starting_weights = init_weights.resolve(cfg)  # before the data: a bad model.init.source fails first
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    net = cfg.model.build(num_classes=datamodule.num_classes, in_channels=datamodule.sample_shape[0])
    report = init_weights.load(net, starting_weights, cfg)
    module = MODULES[cfg.model.family](net, num_classes=datamodule.num_classes, optim=cfg.optim.model_dump(mode="json"),
                             class_names=list(datamodule.class_names),
                             channels_last=hardware.channels_last(cfg, getattr(net, "dim", 2)),
                             compile=cfg.model.compile)
    init_weights.configure(module, report, cfg)
    return datamodule, module


def restored_parts(cfg: TrainConfig, checkpoint: str | None):
    """`build_parts`, with the module's weights from a Lightning `checkpoint` of this run when it exists."""
    import torch

    datamodule, module = build_parts(cfg)
    if checkpoint and os.path.exists(checkpoint):
        # weights_only=False: Lightning checkpoints hold loop and callback state besides tensors.
        module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    return datamodule, module


def checkpoint_callbacks(cfg: TrainConfig, checkpoint_dir: Path, monitor: str | None) -> list:
    """Best-by-validation at epoch ends, plus `last.ckpt` every N optimizer steps and epoch end."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    # Both write the same last.ckpt (no "-v1" versions): whichever saved latest is the resume point.
    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="best-{epoch}-{step}", monitor=monitor,
                           mode="max", save_top_k=1 if monitor else 0, save_last=True,
                           enable_version_counter=False)
    steps = ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=cfg.trainer.checkpoint_every_n_steps,
                            save_top_k=0, save_last=True, enable_version_counter=False)
    return [best, steps]


def trainer_arguments(cfg: TrainConfig) -> dict[str, Any]:
    trainer = cfg.trainer
    arguments = dict(accelerator=trainer.accelerator, devices=trainer.devices, strategy=trainer.strategy,
                     num_nodes=trainer.num_nodes, precision=hardware.precision(cfg), max_epochs=trainer.max_epochs,
                     max_steps=trainer.max_steps, log_every_n_steps=trainer.log_every_n_steps,
                     gradient_clip_val=trainer.gradient_clip_val, deterministic=trainer.deterministic,
                     accumulate_grad_batches=trainer.accumulate_grad_batches,
                     enable_progress_bar=trainer.enable_progress_bar, num_sanity_val_steps=0)
    for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if getattr(trainer, name) is not None:
            arguments[name] = getattr(trainer, name)
    return arguments


def run_training(cfg: TrainConfig, *, callbacks: list | None = None, role: ProcessRole | None = None) -> FitResult:
    """Train and test in this process: the only one, a DDP rank, or (with its `role`) a Ray Train worker.

    `callbacks`: extra Lightning callbacks, added after the checkpoint callbacks."""
    import lightning.pytorch as pl

    from training.checkpoints import VerifiedCheckpointIO
    from training.mlflow_logger import MetricsBeforeCheckpoint

    role = role or ProcessRole()
    uri = tracking.tracking_uri(cfg.tracking.uri)
    run = None
    if role.is_rank_zero():
        tracking.experiment_id(uri, cfg.tracking.experiment)  # created by us, not the logger: tagged for the UI
        done = completed_result(cfg)
        if done is not None:
            return done
        run = tracking.find_run(uri, cfg.tracking.experiment, cfg.name)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    hardware.log_measurements()
    datamodule, module = build_parts(cfg)
    checkpoint_dir = tracking.run_dir(cfg.name) / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
    monitor = "val/acc" if _has_validation(datamodule) else None
    checkpoints = checkpoint_callbacks(cfg, checkpoint_dir, monitor)
    callbacks = checkpoints + list(callbacks or [])
    arguments, callbacks, resume = role.trainer_setup(trainer_arguments(cfg), callbacks,
                                                      role.resume_from(checkpoint_dir))
    arguments["plugins"] = [*arguments.get("plugins", []), VerifiedCheckpointIO()]
    logger = tracking.make_logger(uri, cfg.tracking.experiment, cfg.name, run.info.run_id if run else None)
    callbacks.append(MetricsBeforeCheckpoint(logger))
    trainer = role.prepare(pl.Trainer(**arguments, callbacks=callbacks, logger=logger,
                                      default_root_dir=str(tracking.run_dir(cfg.name))))

    if trainer.is_global_zero:
        from training.data_check import log_data_summary

        resolved = hardware.summary(cfg, module.input_dims - 2)
        print("hardware: " + "; ".join(f"{key.removeprefix('resolved.')} {value}" for key, value in resolved.items()))
        _log_config(logger, cfg, run, resolved)
        log_data_summary(uri, logger.run_id, datamodule)
        init_tracking.record(uri, logger.run_id, module.init_report, run.data.tags if run else {})
        if resume:
            print(f"resuming {cfg.name!r} from {resume}")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    metrics = _scalars(trainer.callback_metrics)
    best_path = checkpoints[0].best_model_path or None
    trainer.test(module, datamodule=datamodule, ckpt_path=best_path)
    metrics.update(_scalars(trainer.callback_metrics))

    if not trainer.is_global_zero:
        return FitResult(cfg.name, metrics, best_path, None, tracking_uri=uri)
    return _finish_run(cfg, uri, logger, module, datamodule, metrics, best_path or str(last))


def _finish_run(cfg, uri, logger, module, datamodule, metrics, checkpoint) -> FitResult:
    """Rank 0 after training: figures, data quality, model, registration, the `complete` tag."""
    from training.figures import log_figures, test_batches

    run_id = logger.run_id
    quality = {f"data/{key}": float(value) for key, value in (datamodule.data_quality() or {}).items()}
    if quality:
        logger.log_metrics(quality)
        metrics.update(quality)
    batches = test_batches(datamodule, cfg.tracking.figure_batches)
    figure_names = log_figures(uri, run_id, module, batches) if cfg.tracking.figures and batches else []
    if os.path.exists(checkpoint):
        tracking.log_artifacts(uri, run_id, [checkpoint], "checkpoints")
    version = None
    if cfg.tracking.log_model and batches:
        from training.model_card import build_contract

        example = module.single_clip(batches[0][0])
        contract = build_contract(cfg, datamodule, metrics, run_id)
        version = tracking.log_classifier(uri, run_id, module.net, example, contract, cfg.tracking.register_as,
                                          cfg.tracking.alias)
    init_tracking.link_version(uri, cfg.tracking.register_as, version, module.init_report)
    tags = {tracking.CHECKPOINT_TAG: checkpoint, **({tracking.VERSION_TAG: version} if version is not None else {})}
    tracking.end_run(uri, run_id, "FINISHED", {**tags, tracking.COMPLETE_TAG: "true"})
    return FitResult(cfg.name, metrics, checkpoint, run_id, version, uri, figures=figure_names)


def _log_config(logger, cfg: TrainConfig, run, resolved: dict[str, str]) -> None:
    """Flattened params and what `auto` settings resolved to (only new keys when resuming: MLflow params
    are immutable), and the YAML."""
    from training.config import flatten, to_yaml

    existing = run.data.params if run is not None else {}
    params = {key: value for key, value in {**flatten(cfg), **resolved}.items() if key not in existing}
    if params:
        logger.log_hyperparams(params)
    uri = tracking.tracking_uri(cfg.tracking.uri)
    tracking.set_tags(uri, logger.run_id, {tracking.RUN_NAME_TAG: cfg.name})
    tracking.log_text(uri, logger.run_id, to_yaml(cfg), "config/train.yaml")
    if run is not None:
        tracking.reopen_run(uri, logger.run_id)


def _has_validation(datamodule) -> bool:
    try:
        return datamodule.val_dataloader() is not None
    except (NotImplementedError, AttributeError):
        return False


def _scalars(metrics: dict) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if getattr(value, "numel", lambda: 1)() == 1}
