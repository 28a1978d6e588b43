"""Hyperparameter search over where attention blocks go and how much they reduce (Ray Tune + MLflow).

The only package that imports `ray.tune`. A search config is a training config plus a `search:`
section (tuning/config.py); `attnlab tune --config FILE` checks its space before any trial
(tuning/space.py, tuning/budget.py), runs it under Ray Tune with grid/random/Optuna sampling and
ASHA (tuning/search.py, one `training.fit` per trial in tuning/trainable.py), nests every trial's
MLflow run under one parent run, and writes the ablation table and heatmap (tuning/report.py).
`attnlab tune --resume NAME` continues an interrupted search.

Imports stay light here: `tuning.cli` is loaded by every `attnlab` command.
"""
