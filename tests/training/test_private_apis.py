"""MLflow keeps the URI given to `set_tracking_uri` in a private attribute that `isolated_tracking_state`
reads: this guards it, and checks the fallback that works without it."""

import os

import mlflow
import pytest

from training import tracking


def test_mlflow_still_keeps_the_set_tracking_uri_where_tracking_reads_it(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri("sqlite:////tmp/guard.db")
    try:
        assert tracking._fluent_uri() == "sqlite:////tmp/guard.db"
    finally:
        mlflow.set_tracking_uri(None)  # None unsets it and the exported variable
    assert tracking._fluent_uri() is None and "MLFLOW_TRACKING_URI" not in os.environ
    assert not mlflow.is_tracking_uri_set()


@pytest.mark.parametrize("exported", [None, "http://mlflow.example:5000"])
def test_without_the_private_attribute_the_environment_is_restored(monkeypatch, exported):
    monkeypatch.setattr(tracking, "_fluent_uri", lambda: tracking._UNKNOWN)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if exported:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", exported)
    with tracking.isolated_tracking_state():
        mlflow.set_tracking_uri("sqlite:////tmp/elsewhere.db")
    assert os.environ.get("MLFLOW_TRACKING_URI") == exported
    assert tracking.tracking_uri() == (exported or tracking.default_tracking_uri())
    if exported:
        assert mlflow.get_tracking_uri() == exported  # the same effective URI as before the block
