"""A search job's trials, read live from MLflow, and its ablation table built from them.

Each trial is a child run of the search's parent run (TrackingReader.child_runs); its searched values
are its params (the flattened config, `model.reduction` -> "16"), its score the latest value of the
search metric. The table is the one `attnlab tune` writes at the end (tuning/report.py: rows x
columns -> best value), built here from whatever trials exist so far, so it fills in while the
search runs.
"""

from __future__ import annotations

import math
from typing import Any

from service.tracking import TrackingReader
from training import tracking
from training.tracking import COMPLETE_TAG, RUN_NAME_TAG
from tuning.report import build_table
from tuning.tags import INFEASIBLE_TAG, STOPPED_EARLY_TAG


def search_trials(reader: TrackingReader, parent_run_id: str, search: dict[str, Any]) -> dict[str, Any]:
    """{planned, trials: [...], ablation: {...}} for the search section `search` of a stored job config."""
    parent = tracking.get_run(reader.uri, parent_run_id)
    metric, mode = search.get("metric", "val/acc"), search.get("mode", "max")
    rows_name, columns_name = search.get("rows", "model.placement"), search.get("columns", "model.reduction")
    space = search.get("space") or {}
    runs = reader.child_runs(parent_run_id)
    shown = list(dict.fromkeys([*space, rows_name, columns_name]))  # searched fields, then the table's axes
    trials = [_trial(run, shown, metric) for run in runs]
    table = build_table(
        [{**trial["values"], metric: trial["metric"], "stopped_early": trial["stopped_early"],
          "over_budget": trial["over_budget"]} for trial in trials],
        metric=metric, mode=mode, row_name=rows_name, column_name=columns_name,
        rows=_grid(space.get(rows_name)), columns=_grid(space.get(columns_name)))
    best = table.best()
    cells = [[{**table.cell(row, column).__dict__, "best": best == (str(row), str(column))}
              for column in table.columns] for row in table.rows]
    return {"planned": _planned(parent.data.params), "metric": metric, "mode": mode, "trials": trials,
            "ablation": {"row_name": rows_name, "column_name": columns_name, "rows": [str(r) for r in table.rows],
                         "columns": [str(c) for c in table.columns], "cells": cells}}


def _trial(run, shown: list[str], metric: str) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    value = run.data.metrics.get(metric)
    return {"name": tags.get(RUN_NAME_TAG) or run.info.run_name, "run_id": run.info.run_id,
            "status": run.info.status, "values": {path: params.get(path, "-") for path in shown},
            "metric": value if value is not None and math.isfinite(value) else None,
            "epoch": _int(run.data.metrics.get("epoch")),
            "stopped_early": tags.get(STOPPED_EARLY_TAG) == "true", "over_budget": INFEASIBLE_TAG in tags,
            "complete": tags.get(COMPLETE_TAG) == "true"}


def _grid(domain: Any) -> list[str] | None:
    """The grid's values in their written order (as params carry them: strings), else None."""
    if isinstance(domain, dict):
        values = domain.get("grid") or domain.get("choice")
        if isinstance(values, list):
            return [str(value) for value in values]
    return None


def _planned(params: dict[str, str]) -> int | None:
    """Trials the search will run: grid points (after budget pruning) x samples, or the samples drawn."""
    samples = _int(params.get("search.num_samples"))
    if params.get("search.algorithm") == "grid":
        points = _int(params.get("search.grid_points"))
        return points * (samples or 1) if points is not None else None
    return samples


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
