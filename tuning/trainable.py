"""The Ray Tune trainable: one trial = one `training.fit(cfg)` whose metrics reach Tune as it trains.

Each trial:
1. builds its TrainConfig from the search's base config and the trial's values (tuning/space.py),
   named `<search>-<trial id>` so a retried or resumed trial continues its own checkpoint and run;
2. checks the budget of a sampled network and, over budget, reports it infeasible (`infeasible=1`,
   the worst value of the metric) without training;
3. opens (or finds again) its MLflow child run, tagged `mlflow.parentRunId` = the search's run —
   `fit` continues the run that carries its name (training/tracking.py `find_run`);
4. calls `fit` with `TuneReportCallback`, which sends the Lightning metrics to Tune after every
   validation (or every N steps), so ASHA can stop a trial between epochs, and with the search's
   own Lightning callbacks (`run_search(..., trial_callbacks=...)`).

Trials that need several workers (`resources.workers > 1`, e.g. several GPUs) run the same fit
through Ray Train (`cluster.kind: ray`, training/ray_train.py: a TorchTrainer per trial, as Ray 2.60's
Train V2 does Tune-over-Train); the workers' per-epoch reports are forwarded to Tune for ASHA.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from training import tracking
from tuning.tags import INFEASIBLE_TAG, SEARCH_TAG, TRIAL_TAG

PARENT_TAG = tracking.PARENT_TAG
LAST_REPORT_FILE = "tune-last-report.json"  # in the trial's run folder ($ATTNLAB_HOME/runs/<name>)


class TuneReportCallback(pl.Callback):
    """Report Lightning's logged scalars to Ray Tune (each report is one ASHA time step).

    Every report also carries `timing/first_step_at` (wall clock at the first training step), so the
    overhead of a trial (start -> first step) can be read from its results (benchmarks/bench_tuning.py).
    """

    def __init__(self, metric: str, every_n_steps: int | None = None, trial_run_id: str | None = None,
                 last_report: Path | None = None) -> None:
        self.metric = metric
        self.every_n_steps = every_n_steps
        self.extra: dict[str, Any] = {"mlflow_run_id": trial_run_id} if trial_run_id else {}
        self.last_report = last_report  # kept for a trial restarted after its fit had finished

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        self.extra.setdefault("timing/first_step_at", time.time())

    def _report(self, trainer: pl.Trainer) -> None:
        from ray import tune

        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                   if getattr(value, "numel", lambda: 1)() == 1}
        if self.metric not in metrics:  # nothing for the scheduler to act on yet
            return
        report = {**metrics, "epoch": trainer.current_epoch, "step": trainer.global_step, **self.extra}
        if self.last_report is not None:
            self.last_report.parent.mkdir(parents=True, exist_ok=True)
            self.last_report.write_text(json.dumps(report))
        tune.report(report)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps is None and not trainer.sanity_checking:
            self._report(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0:
            self._report(trainer)


def worst_value(mode: str) -> float:
    return float("-inf") if mode == "max" else float("inf")


def run_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Body of every trial; `context` is fixed per search (see tuning/search.py `trial_context`)."""
    import torch
    from ray import tune

    from training import fit
    from tuning.budget import over_budget
    from tuning.config import BudgetSpec, cost_of, trial_config
    from tuning.space import trial_overrides

    os.environ["ATTNLAB_HOME"] = context["attnlab_home"]
    torch.set_num_threads(max(1, int(context["cpus_per_trial"])))

    trial_id = tune.get_context().get_trial_id()
    overrides = trial_overrides(config)
    cfg = trial_config(context["base"], overrides)
    name = f"{context['search']}-{trial_id}"
    cfg = cfg.model_copy(update={"name": name, "tracking": cfg.tracking.model_copy(update={
        "uri": context["tracking_uri"], "register_as": None, "log_model": False})})
    if context["workers"] > 1:
        cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={
            "kind": "ray", "num_workers": context["workers"], "use_gpu": context["gpus_per_trial"] > 0,
            "cpus_per_worker": context["cpus_per_trial"]})})

    last_report = tracking.run_dir(name) / LAST_REPORT_FILE
    budget = BudgetSpec.model_validate(context["budget"])
    cost = cost_of(cfg, budget)
    run_id = child_run(context, name, trial_id, overrides)
    tracking.log_metrics(context["tracking_uri"], run_id, cost.as_metrics())
    reason = over_budget(cost, budget)
    if reason:
        tracking.end_run(context["tracking_uri"], run_id, "FINISHED", {INFEASIBLE_TAG: reason})
        tune.report({context["metric"]: worst_value(context["mode"]), "infeasible": 1,
                     "mlflow_run_id": run_id})
        return

    if context["workers"] > 1:
        # fit's Ray Train path (cluster.kind "ray"), with the Ray Train callback that forwards each
        # worker epoch report (RayTrainReportCallback) to this trial.
        from ray.tune.integration.ray_train import TuneReportCallback as ForwardTrainReports

        result = fit(cfg, callbacks=context["callbacks"], run_callbacks=[ForwardTrainReports()])
    else:
        callback = TuneReportCallback(context["metric"], context["report_every_n_steps"], run_id, last_report)
        result = fit(cfg, callbacks=[callback, *context["callbacks"]])
    if result.already_complete:
        # The fit had finished when the driver died, before Tune recorded it: nothing trained this time,
        # so report again what the trial last reported (MLflow's names can differ, e.g. `_epoch`).
        saved = json.loads(last_report.read_text()) if last_report.exists() else {}
        report = {**result.metrics, **saved, "mlflow_run_id": run_id}
        report.setdefault(context["metric"], worst_value(context["mode"]))
        tune.report(report)


def child_run(context: dict[str, Any], name: str, trial_id: str, overrides: dict[str, Any]) -> str:
    """The trial's MLflow run under the search's parent run; found again by name on retry/resume."""
    uri, experiment = context["tracking_uri"], context["experiment"]
    run = tracking.find_run(uri, experiment, name)
    if run is not None:
        return run.info.run_id
    tags = {tracking.RUN_NAME_TAG: name, SEARCH_TAG: context["search"], TRIAL_TAG: trial_id}
    tags.update({f"attnlab.space.{path}": str(value) for path, value in overrides.items()})
    return tracking.create_run(uri, experiment, name, tags, parent_run_id=context["parent_run_id"])

