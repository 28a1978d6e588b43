"""Shared pytest fixtures: every test gets its own attnlab home (MLflow store, jobs, checkpoints)."""

import os

import pytest
import torch

# Two cores on CI: keep intra-op threads from oversubscribing when tests spawn workers.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def attnlab_home(tmp_path, monkeypatch):
    """Point ATTNLAB_HOME (embedded MLflow store, job table, checkpoints) at a fresh folder."""
    home = tmp_path / "attnlab-home"
    home.mkdir()
    monkeypatch.setenv("ATTNLAB_HOME", str(home))
    # setenv first so teardown restores the original state even if the test (or mlflow.set_tracking_uri,
    # which exports the variable) sets it again.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    return home
