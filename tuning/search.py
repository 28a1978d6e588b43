"""The search driver: a checked space -> Ray Tune (grid/random/Optuna, ASHA) -> MLflow, report, registry.

`run_search(cfg)` / `resume_search(name)`:
- storage: `$ATTNLAB_HOME/searches/<name>` (Tune's experiment folder) with `search.yaml` (the search
  config) and `search.json` (the MLflow parent run id) beside Tune's state, so `attnlab tune --resume
  NAME` restores the Tuner (`Tuner.restore(path, trainable, resume_errored=True)`): finished trials are
  kept, unfinished and errored ones run again and continue their own checkpoints and MLflow runs.
- MLflow: one parent run per search; one child run per trial (tuning/trainable.py). Trials that ASHA
  stopped are left RUNNING by the killed trial process: the driver marks them KILLED (tag
  `attnlab.stopped_early`); errored ones FAILED.
- budget pruning: grid points over `search.budget` are removed from the grid before the search
  (listed in `pruned.csv` of the parent run); sampled configurations (random/Optuna domains of
  `model.*`) are checked by their trial, which reports them infeasible without training — Optuna
  learns from those, ASHA treats them as the worst trial of their rung.
- the result: ablation table (rows × columns, default placement × reduction) as Markdown + CSV and a
  heatmap, logged to the parent run; the best finished trial's network is logged once (trials log
  none, to keep them short) and registered with alias `champion` if it beats the current champion
  on the search metric, else `candidate`.
- failures: each trial is retried `max_failures` times (`FailureConfig`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training import tracking
from tuning.config import SearchConfig, SearchPlan, plan_search, validate_search_config
from tuning.space import trial_overrides
from tuning.tags import INFEASIBLE_TAG, SEARCH_TAG, STOPPED_EARLY_TAG
from tuning.trainable import run_trial

TRIAL_DIR_PREFIX = "trial-"
UNBOUNDED_REPORTS = 2**20
DRIVER_CPU = 0.01  # CPU reserved by a trial that drives a multi-worker Ray Train run
REGISTERED_TAG = tracking.REGISTERED_TAG  # "<version>@<alias>" on the parent run
CHAMPION, CANDIDATE = tracking.CHAMPION, tracking.CANDIDATE


@dataclass
class SearchResult:
    name: str
    parent_run_id: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None
    report: dict[str, str] = field(default_factory=dict)
    storage: str = ""
    config: SearchConfig | None = None


def searches_dir() -> Path:
    return tracking.attnlab_home() / "searches"


def run_search(cfg: SearchConfig, *, ray_address: str | None = None, callbacks: list | None = None,
               trial_callbacks: list | None = None) -> SearchResult:
    """Check the space (errors before any trial), then run the whole search.

    `callbacks`: extra `ray.tune.Callback`s of the driver (the benchmark times trial starts with one).
    `trial_callbacks`: extra Lightning callbacks for every trial's `fit` (they travel pickled).
    """
    plan = plan_search(cfg)
    folder = searches_dir() / cfg.search_name
    uri = tracking.tracking_uri(cfg.tracking.uri)
    state = _read_state(folder)
    if state is None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "search.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        state = {"parent_run_id": _create_parent_run(cfg, uri, plan), "tracking_uri": uri}
        (folder / "search.json").write_text(json.dumps(state))
    _init_ray(ray_address or cfg.cluster.address)
    from ray import tune

    if tune.Tuner.can_restore(str(folder)):  # the same name again continues that search
        return _finish(cfg, plan, state, _restored_tuner(cfg, plan, state, folder, trial_callbacks).fit(), folder)
    tuner = tune.Tuner(
        _trainable(cfg, state, trial_callbacks),
        param_space=_param_space(cfg, plan),
        tune_config=_tune_config(cfg),
        run_config=_run_config(cfg, callbacks),
    )
    return _finish(cfg, plan, state, tuner.fit(), folder)


def resume_search(name: str, *, ray_address: str | None = None, trial_callbacks: list | None = None) -> SearchResult:
    """Continue an interrupted search from $ATTNLAB_HOME/searches/<name> without repeating finished trials."""
    folder = searches_dir() / name
    state = _read_state(folder)
    if state is None or not (folder / "search.yaml").exists():
        known = sorted(p.name for p in searches_dir().glob("*") if (p / "search.json").exists())
        raise FileNotFoundError(f"no search named {name!r} in {searches_dir()}; searches: "
                                f"{', '.join(known) or 'none'}")
    cfg = validate_search_config(yaml.safe_load((folder / "search.yaml").read_text()), str(folder / "search.yaml"))
    plan = plan_search(cfg)
    _init_ray(ray_address or cfg.cluster.address)
    from ray import tune

    if not tune.Tuner.can_restore(str(folder)):
        raise FileNotFoundError(f"search {name!r} has no Tune state in {folder} yet; run it again with "
                                f"`attnlab tune --config {folder / 'search.yaml'}`")
    return _finish(cfg, plan, state, _restored_tuner(cfg, plan, state, folder, trial_callbacks).fit(), folder)


def _restored_tuner(cfg: SearchConfig, plan: SearchPlan, state: dict[str, Any], folder: Path,
                    trial_callbacks: list | None):
    from ray import tune

    return tune.Tuner.restore(str(folder), _trainable(cfg, state, trial_callbacks), resume_errored=True,
                              param_space=_param_space(cfg, plan))


# ---- Tune objects ------------------------------------------------------------------------------


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
    else:  # a local instance that ends with this process
        ray.init(include_dashboard=False, log_to_driver=True)


def trial_context(cfg: SearchConfig, state: dict[str, Any], trial_callbacks: list | None = None) -> dict[str, Any]:
    """What every trial needs besides its own values (sent once through the object store)."""
    search = cfg.search
    return {"base": cfg.base_raw(), "search": cfg.search_name, "metric": search.metric, "mode": search.mode,
            "tracking_uri": state["tracking_uri"], "experiment": cfg.tracking.experiment,
            "parent_run_id": state["parent_run_id"], "attnlab_home": str(tracking.attnlab_home()),
            "cpus_per_trial": search.resources.cpu, "gpus_per_trial": search.resources.gpu,
            "workers": search.resources.workers, "report_every_n_steps": search.report_every_n_steps,
            "budget": search.budget.model_dump(mode="json"), "callbacks": list(trial_callbacks or [])}


def _trainable(cfg: SearchConfig, state: dict[str, Any], trial_callbacks: list | None):
    from ray import tune

    resources = cfg.search.resources
    if resources.workers > 1:
        # The trial only drives a TorchTrainer whose workers ask for their own CPUs/GPUs (Train V2);
        # Tune takes no empty request, so a sliver. max_concurrent_trials bounds the Train runs.
        trial_resources = {"cpu": DRIVER_CPU}
    else:
        trial_resources = {"cpu": resources.cpu, "gpu": resources.gpu}
    return tune.with_resources(tune.with_parameters(run_trial, context=trial_context(cfg, state, trial_callbacks)),
                               trial_resources)


def _param_space(cfg: SearchConfig, plan: SearchPlan) -> dict[str, Any]:
    from tuning.space import to_tune_space

    return to_tune_space(plan.space, plan.points, cfg.search.algorithm)


def _tune_config(cfg: SearchConfig):
    from ray import tune

    search = cfg.search
    seed = search.seed if search.seed is not None else cfg.seed
    search_alg = None
    if search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed),
                                  metric=search.metric, mode=search.mode)
    scheduler = None
    if search.scheduler.kind == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_reports(cfg) + 1,
                                  grace_period=search.scheduler.grace_period,
                                  reduction_factor=search.scheduler.reduction_factor)
    return tune.TuneConfig(metric=search.metric, mode=search.mode, search_alg=search_alg, scheduler=scheduler,
                           num_samples=search.num_samples, max_concurrent_trials=search.max_concurrent_trials,
                           reuse_actors=True, trial_dirname_creator=trial_dirname)


def trial_dirname(trial) -> str:
    """`trial-<id>`: the folder names the trial like its MLflow run (`<search>-<id>`)."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def max_reports(cfg: SearchConfig) -> int:
    """Reports one trial makes at most. ASHA's max_t is one more: a trial is never stopped for
    reaching the end, which would cut its test, checkpoint and MLflow finish short. Step reports
    without `trainer.max_steps` cannot be counted in advance: then the limit is effectively none."""
    if cfg.search.scheduler.max_t is not None:
        return cfg.search.scheduler.max_t
    if cfg.search.report_every_n_steps:
        if cfg.trainer.max_steps > 0:
            return math.ceil(cfg.trainer.max_steps / cfg.search.report_every_n_steps)
        return UNBOUNDED_REPORTS
    return cfg.trainer.max_epochs


def _run_config(cfg: SearchConfig, callbacks: list | None = None):
    from ray import tune

    return tune.RunConfig(name=cfg.search_name, storage_path=str(searches_dir()),
                          failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
                          callbacks=callbacks, verbose=1)


# ---- after the search ----------------------------------------------------------------------------


def _finish(cfg: SearchConfig, plan: SearchPlan, state: dict[str, Any], grid, folder: Path) -> SearchResult:
    from tuning import report

    uri, parent = state["tracking_uri"], state["parent_run_id"]
    children = {run.data.tags.get(tracking.RUN_NAME_TAG): run
                for run in tracking.child_runs(uri, cfg.tracking.experiment, parent)}
    trials = []
    for result in grid:
        trial_id = Path(result.path).name.removeprefix(TRIAL_DIR_PREFIX) if result.path else None
        trials.append(_trial_row(cfg, result, children, trial_id, uri))
    _close_leftover_runs(uri, cfg, parent)

    search = cfg.search
    rows_order = plan.space[search.rows].values if search.rows in plan.space else None
    columns_order = plan.space[search.columns].values if search.columns in plan.space else None
    pruned_rows = [{**p, "over_budget": True} for p in plan.pruned]
    table = report.build_table(trials + pruned_rows, metric=search.metric, mode=search.mode,
                               row_name=search.rows, column_name=search.columns,
                               rows=rows_order, columns=columns_order)
    paths = report.write_report(table, folder / "report")
    tracking.log_artifacts(uri, parent, paths.values(), "ablation")
    if plan.pruned:
        pruned_path = folder / "report" / "pruned.csv"
        pruned_path.write_text(_csv(plan.pruned))
        tracking.log_artifacts(uri, parent, [pruned_path], "ablation")

    best = _best_trial(trials, search.mode)
    result = SearchResult(name=cfg.search_name, parent_run_id=parent, trials=trials, best=best,
                          report={kind: str(path) for kind, path in paths.items()}, storage=str(folder),
                          config=cfg)
    if best is not None:
        tracking.log_metrics(uri, parent, {f"best/{search.metric}": best["value"]})
        tracking.set_tags(uri, parent, {"attnlab.best_trial": best["trial_name"]})
        model_name = search.register_as or cfg.tracking.register_as or cfg.search_name
        result.model_name = model_name
        registered = tracking.get_run(uri, parent).data.tags.get(REGISTERED_TAG)
        if registered:  # the search was finished before (resumed again): register nothing new
            result.model_version, _, result.alias = registered.partition("@")
        else:
            result.model_version, result.alias = register_best(cfg, uri, best, model_name)
            tracking.set_tags(uri, parent, {REGISTERED_TAG: f"{result.model_version}@{result.alias}"})
        tracking.set_tags(uri, parent, {tracking.REGISTERED_MODEL_TAG: model_name})
    tracking.end_run(uri, parent, "FINISHED")
    return result


def _trial_row(cfg: SearchConfig, result, children: dict[str, Any], trial_id: str | None, uri: str) -> dict[str, Any]:
    """One trial for the table: its searched values, last metric value and how it ended."""
    from tuning.config import trial_config

    search = cfg.search
    overrides = trial_overrides(result.config or {})
    trial = trial_config(cfg.base_raw(), overrides)
    metrics = result.metrics or {}
    name = f"{cfg.search_name}-{metrics.get('trial_id') or trial_id}"
    run = children.get(name)
    run_status = run.info.status if run else None
    infeasible = bool(metrics.get("infeasible")) or bool(run and run.data.tags.get(INFEASIBLE_TAG))
    value = metrics.get(search.metric)
    if infeasible or value is None or not math.isfinite(value):
        value = None
    complete = bool(run and run.data.tags.get(tracking.COMPLETE_TAG) == "true")
    stopped_early = result.error is None and not complete and not infeasible
    if run is not None and not complete and not infeasible and run_status != "KILLED":
        # ASHA's stop either kills the trial process (run left RUNNING) or interrupts fit (FAILED).
        tracking.end_run(uri, run.info.run_id, "KILLED" if stopped_early else "FAILED",
                         {STOPPED_EARLY_TAG: str(stopped_early).lower()})
    return {search.rows: _lookup(overrides, trial, search.rows),
            search.columns: _lookup(overrides, trial, search.columns),
            search.metric: value, "value": value, "trial_name": name, "run_id": run.info.run_id if run else None,
            "stopped_early": stopped_early, "over_budget": infeasible, "finished": complete,
            "error": str(result.error) if result.error else None, "config": overrides}


def _lookup(overrides: dict[str, Any], trial, path: str) -> Any:
    if path in overrides:
        return overrides[path]
    node: Any = trial.model_dump(mode="json")
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _best_trial(trials: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """Best finished trial (ran to the end and logged its checkpoint) by the metric's last value."""
    finished = [t for t in trials if t["finished"] and t["value"] is not None]
    if not finished:
        return None
    return (max if mode == "max" else min)(finished, key=lambda t: t["value"])


def _close_leftover_runs(uri: str, cfg: SearchConfig, parent: str) -> None:
    """Runs of trials Tune no longer lists (e.g. a trial replaced on restore) must not stay RUNNING."""
    for run in tracking.child_runs(uri, cfg.tracking.experiment, parent):
        if run.info.status == "RUNNING":
            tracking.end_run(uri, run.info.run_id, "KILLED", {STOPPED_EARLY_TAG: "true"})


def register_best(cfg: SearchConfig, uri: str, best: dict[str, Any], model_name: str) -> tuple[str | None, str]:
    """Log the best trial's network into its run, register it, and alias it champion or candidate
    (`training.tracking.alias_by_champion_rule`)."""
    from training.local import restored_parts
    from tuning.config import trial_config

    checkpoint = tracking.get_run(uri, best["run_id"]).data.tags.get(tracking.CHECKPOINT_TAG)
    datamodule, module = restored_parts(trial_config(cfg.base_raw(), best["config"]), checkpoint)
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    example = module.single_clip(batch[0])
    version = tracking.log_pytorch_model(uri, best["run_id"], module.net, example, model_name, alias=None)
    alias = tracking.alias_by_champion_rule(uri, model_name, version, cfg.search.metric, cfg.search.mode,
                                            best["value"])
    return version, alias


def _create_parent_run(cfg: SearchConfig, uri: str, plan: SearchPlan) -> str:
    run_id = tracking.create_run(uri, cfg.tracking.experiment, cfg.search_name,
                                 tags={SEARCH_TAG: cfg.search_name, "attnlab.kind": "search"})
    search = cfg.search
    tracking.log_params(uri, run_id, {
        "search.algorithm": search.algorithm, "search.metric": search.metric, "search.mode": search.mode,
        "search.num_samples": search.num_samples, "search.grid_points": len(plan.points),
        "search.pruned_points": len(plan.pruned), "search.scheduler": search.scheduler.kind})
    tracking.log_text(uri, run_id, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
                      "config/search.yaml")
    return run_id


def _read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "search.json"
    return json.loads(path.read_text()) if path.exists() else None


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
