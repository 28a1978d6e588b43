"""`attnlab data check --config FILE`: the dataset report before training, in the terminal, as JSON and in MLflow.

Any run config works (only its `name`, `data` and `tracking` sections are read), so the check runs on
exactly the data a training would see. Every file is probed once (threads, the shared probe cache:
a later training — or a second check — starts without probing again); the report
(datamodules/check.py) goes to the terminal as a table, to `--json FILE`, and to MLflow as the run
`<name>.data-check` (one run per name: each check adds its metrics and replaces the artifacts
`data_check/summary.json` and `data_check/summary.txt`). Training logs the same report into its own
run (`log_summary`). The exit status is 0 whenever a report was made — its verdict says whether
training would start — and 2 when the config or the layout's annotation files are wrong.
Top-level imports stay light: neither torch nor Lightning is imported by this command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from datamodules import VideoDataConfig
from training.config import ConfigError, TrackingConfig, apply_override, format_errors, read_raw_config

RUN_SUFFIX = ".data-check"
ARTIFACT_DIR = "data_check"


class DataCheckConfig(BaseModel):
    """The part of a run config the check reads; the other sections (model, optim, ...) are not its business."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field("data", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=117,
                      description="The run's name; the check's MLflow run is '<name>.data-check'")
    data: VideoDataConfig  # image datasets are read whole, and checked, when training starts
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @property
    def run_name(self) -> str:
        return self.name + RUN_SUFFIX


def load_check_config(path: str | Path | None, overrides: list[str] | None = None, raw: dict | None = None
                      ) -> DataCheckConfig:
    from pydantic import ValidationError

    if path is not None:
        raw = read_raw_config(path, overrides)
    else:
        raw = dict(raw or {})
        for override in overrides or []:
            apply_override(raw, override)
    try:
        return DataCheckConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_errors(error, str(path) if path else None)) from None


def check_data(cfg: DataCheckConfig, progress: bool = False, seed: int = 0) -> dict:
    """Scan the dataset (probing what the cache does not know) and return the report."""
    from datamodules.check import summarize
    from datamodules.scan import scan_dataset

    if not progress:
        return summarize(scan_dataset(cfg.data, seed), cfg.data)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, redirect_stdout=False) as bar:
        task = bar.add_task("probe", total=None)
        scan = scan_dataset(cfg.data, seed, progress=lambda n: bar.advance(task, n),
                            on_listed=lambda total: bar.update(task, total=total))
    return summarize(scan, cfg.data)


def summary_metrics(summary: dict) -> dict[str, float]:
    """The report's counts as flat MLflow metrics (`data_check/...`)."""
    metrics = {f"data_check/{key}": float(summary[key])
               for key in ("files", "samples", "bad_files", "bad_fraction", "classes", "from_probe_cache")}
    for split, facts in summary["splits"].items():
        for key in ("videos", "samples", "usable_samples", "shorter_than_clip"):
            metrics[f"data_check/{split}/{key}"] = float(facts[key])
        for kind, count in {**facts["bad_files"], **facts["bad_segments"]}.items():
            metrics[f"data_check/{split}/bad/{kind}"] = float(count)
    return metrics


def log_summary(uri: str, run_id: str, summary: dict) -> None:
    """The report as artifacts (JSON + table) and tags of an existing MLflow run (a check's or a training's)."""
    from datamodules.check import render_table
    from training import tracking

    tracking.log_text(uri, run_id, json.dumps(summary, indent=1), f"{ARTIFACT_DIR}/summary.json")
    tracking.log_text(uri, run_id, render_table(summary), f"{ARTIFACT_DIR}/summary.txt")
    tracking.set_tags(uri, run_id, {"attnlab.data_check.layout": summary["layout"],
                                    "attnlab.data_check.verdict": summary["verdict"][:5000]})


def log_data_summary(uri: str, run_id: str, datamodule) -> None:
    """A training's copy of the report: printed to its log and logged into its run (video DataModules)."""
    from datamodules.check import render_table

    report = getattr(datamodule, "data_summary", None)
    if report is None:
        return
    summary = report()
    print(render_table(summary, width=200))
    log_summary(uri, run_id, summary)


def log_check_run(cfg: DataCheckConfig, summary: dict) -> str:
    """Log the report into the run '<name>.data-check' (created once, reused after); its run id."""
    from training import tracking

    uri = tracking.tracking_uri(cfg.tracking.uri)
    with tracking.isolated_tracking_state():
        run = tracking.find_run(uri, cfg.tracking.experiment, cfg.run_name)
        if run is None:
            run_id = tracking.create_run(uri, cfg.tracking.experiment, cfg.run_name,
                                         tags={tracking.RUN_NAME_TAG: cfg.run_name})
        else:
            run_id = run.info.run_id
            tracking.reopen_run(uri, run_id)
        step = len(tracking.metric_history(uri, run_id, "data_check/files"))  # one step per check
        tracking.log_metrics(uri, run_id, summary_metrics(summary), step=step)
        log_summary(uri, run_id, summary)
        tracking.end_run(uri, run_id, "FINISHED")
    return run_id


# ---- CLI ----------------------------------------------------------------------------------------


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect datasets")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="probe every file of a run config's dataset and report per split",
                               description=__doc__.split("\n\n")[1])
    check.add_argument("--config", required=True, help="YAML run config (only name, data and tracking are read)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, value parsed as YAML (repeatable): --set data.split=2")
    check.add_argument("--json", dest="json_path", type=Path, help="also write the report to this JSON file")
    check.add_argument("--no-mlflow", action="store_true", help="don't log the report to MLflow")
    check.set_defaults(func=run_check)


def run_check(args) -> int:
    from datamodules.check import render_table

    try:
        cfg = load_check_config(args.config, args.overrides)
        summary = check_data(cfg, progress=sys.stderr.isatty())
    except ValueError as error:  # ConfigError too: a bad config or bad annotation files
        print(error, file=sys.stderr)
        return 2
    print(render_table(summary, width=200))
    if args.json_path:
        args.json_path.write_text(json.dumps(summary, indent=1))
        print(f"report: {args.json_path}")
    if not args.no_mlflow:
        run_id = log_check_run(cfg, summary)
        print(f"MLflow run: {run_id} ({cfg.run_name}, artifacts {ARTIFACT_DIR}/summary.json and summary.txt)")
    return 0
