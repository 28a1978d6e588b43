"""What a user sees of MLflow: experiments open on their runs, and jobs point at the UI already serving."""

from mlflow.tracking import MlflowClient

from training import tracking


def test_experiments_are_tagged_to_open_on_their_training_runs(shared_mlflow_uri):
    client = MlflowClient(tracking_uri=shared_mlflow_uri)
    created = tracking.experiment_id(shared_mlflow_uri, "ui-hints-new")
    older = client.create_experiment("ui-hints-older")  # as an earlier attnlab (or a user) made it
    assert tracking.experiment_id(shared_mlflow_uri, "ui-hints-older") == older
    for experiment in (created, older):
        assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"


def test_browse_hint_names_the_running_ui_else_the_command(monkeypatch):
    uri = "sqlite:////tmp/store/mlflow.db"
    monkeypatch.delenv(tracking.UI_URL_ENV, raising=False)
    assert tracking.browse_hint(uri, "abc") == f"mlflow ui --backend-store-uri {uri}"
    monkeypatch.setenv(tracking.UI_URL_ENV, "http://127.0.0.1:5123/")
    assert tracking.browse_hint(uri, "abc") == "http://127.0.0.1:5123/#/runs/abc"
