"""Shared pytest fixtures: every test gets its own attnlab home (MLflow store, jobs, checkpoints)."""

import os

import pytest
import torch

# Two cores on CI: keep intra-op threads from oversubscribing when tests spawn workers.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Fixtures that start other processes (an `attnlab serve`, a Ray instance or cluster, a whole search):
# a test using one belongs to the slow tier, which `make test-fast` (-m "not slow") leaves out.
SLOW_FIXTURES = {"queue_service", "start_service", "ray_instance", "ray_cluster", "finished_search"}


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("mark these @pytest.mark.slow (they start processes through "
                                f"{', '.join(sorted(SLOW_FIXTURES))}): {', '.join(unmarked)}")


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
