"""`fit(cfg) -> FitResult`: the one training entry point of the CLI, tuning and the service.

One run, in this process (Lightning launches DDP ranks itself: `trainer.devices`/`strategy`) or, with
`cluster.kind: ray`, on Ray Train workers. Both paths run the same core, `training.local.run_training`
(what it does and how a run resumes is told there), and both get the caller's Lightning callbacks.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

from training import run_lock, tracking
from training.local import FitResult, ProcessRole, build_parts, completed_result, result_from_run, run_training

if TYPE_CHECKING:
    from training.config import TrainConfig

__all__ = ["FitResult", "build_parts", "completed_result", "fit", "result_from_run", "run_training"]


def fit(cfg: TrainConfig, *, callbacks: list | None = None, run_callbacks: list | None = None) -> FitResult:
    """Train, test and log one run; on `cluster.kind: ray` the same run goes through Ray Train.

    `callbacks`: extra Lightning callbacks for every process of the run — this one, each DDP rank,
    each Ray Train worker (there they travel pickled). `run_callbacks`: Ray Train callbacks of a
    `cluster.kind: ray` run (`RunConfig(callbacks=...)`, e.g. a Tune trial forwarding the workers'
    reports); a local run has no Ray controller to call them, so giving them there is an error.
    """
    if run_callbacks and cfg.cluster.kind != "ray":
        raise ValueError(f"run_callbacks are Ray Train callbacks: they need cluster.kind 'ray', "
                         f"this run has {cfg.cluster.kind!r}")
    # One writer per run name (training/run_lock.py); DDP ranks > 0 re-run this program while rank 0 holds it.
    lock = run_lock.hold(tracking.run_dir(cfg.name), cfg.name) if ProcessRole().is_rank_zero() else nullcontext()
    with tracking.isolated_tracking_state(), lock:
        if cfg.cluster.kind == "ray":
            from training.ray_train import fit_on_ray

            return fit_on_ray(cfg, callbacks=callbacks, run_callbacks=run_callbacks)
        return run_training(cfg, callbacks=callbacks)
