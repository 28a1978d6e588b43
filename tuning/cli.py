"""`attnlab tune --config FILE | --resume NAME`: run or continue a hyperparameter search.

Light imports only at the top (ray, torch and mlflow load inside the command).
"""

from __future__ import annotations

import os
import sys
import time


def add_commands(subparsers) -> None:
    tune = subparsers.add_parser(
        "tune", help="search placement × reduction (and any config field) with Ray Tune, ASHA and MLflow")
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="search config: a training config plus a `search:` section, "
                        "e.g. configs/search_se_cpu.yaml")
    source.add_argument("--resume", metavar="NAME",
                        help="continue the interrupted search NAME from $ATTNLAB_HOME/searches/NAME")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, value parsed as YAML (repeatable): --set search.num_samples=8")
    tune.add_argument("--ray-address", default=None, help="join this Ray cluster (default: cluster.address, "
                      "else a local instance that ends with the command)")
    tune.add_argument("--check", action="store_true",
                      help="only check the search space and print the grid after budget pruning")
    tune.set_defaults(func=run_tune)


def run_tune(args) -> int:
    from training.config import ConfigError
    from tuning.config import load_search_config, plan_search

    try:
        if args.resume:
            from tuning.search import resume_search

            started = time.monotonic()
            result = resume_search(args.resume, ray_address=args.ray_address)
        else:
            cfg = load_search_config(args.config, args.overrides)
            if args.check:
                _print_plan(plan_search(cfg))
                return 0
            from tuning.search import run_search

            started = time.monotonic()
            result = run_search(cfg, ray_address=args.ray_address)
    except (ConfigError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    _print_result(result, time.monotonic() - started)
    return 0


def _print_plan(plan) -> None:
    print(f"{len(plan.points)} grid point(s) to train, {len(plan.pruned)} pruned by the budget")
    for point in plan.points:
        print("  " + ", ".join(f"{k}={v}" for k, v in point.items()))
    for point in plan.pruned:
        print("  pruned: " + ", ".join(f"{k}={v}" for k, v in point.items()))


def _print_result(result, seconds: float) -> None:
    print()
    print(open(result.report["markdown"]).read())
    stopped = sum(t["stopped_early"] for t in result.trials)
    failed = sum(t["error"] is not None for t in result.trials)
    print(f"search {result.name}: {len(result.trials)} trials ({stopped} stopped early by ASHA, "
          f"{failed} failed) in {seconds:.0f} s; MLflow parent run {result.parent_run_id}")
    if result.best is not None:
        print(f"best: {result.best['trial_name']} = {result.best['value']:.4f} "
              f"({', '.join(f'{k}={v}' for k, v in result.best['config'].items())})")
    if result.model_version:
        print(f"registered {result.model_name} v{result.model_version} as @{result.alias}")
    print(f"report: {result.report.get('markdown')}, {result.report.get('figure')}")
    from training import tracking

    if os.environ.get(tracking.UI_URL_ENV):  # under `attnlab serve`: its MLflow UI shows the parent run
        print(f"browse: {tracking.browse_hint('', result.parent_run_id)}")
    print(f"resume or inspect: attnlab tune --resume {result.name}   (storage {result.storage})")
