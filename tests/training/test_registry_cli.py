"""`attnlab registry list | show NAME | promote NAME VERSION --alias A` against an MLflow registry."""

from service.cli import main
from training.tracking import client


def _registered(uri, tmp_path, name="se-model", versions=2):
    mlflow_client = client(uri)
    experiment = mlflow_client.create_experiment("registry-test", artifact_location=tmp_path.as_uri())
    mlflow_client.create_registered_model(name)
    for _ in range(versions):
        run = mlflow_client.create_run(experiment)
        mlflow_client.log_metric(run.info.run_id, "test/acc", 0.875)
        mlflow_client.create_model_version(name, f"{tmp_path.as_uri()}/model", run_id=run.info.run_id)
    mlflow_client.set_registered_model_alias(name, "candidate", "2")
    return mlflow_client


def test_registry_list_show_and_promote(shared_mlflow_uri, tmp_path, capsys):
    mlflow_client = _registered(shared_mlflow_uri, tmp_path)
    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "list"]) == 0
    listing = capsys.readouterr().out
    assert "se-model" in listing and "candidate=v2" in listing

    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "show", "se-model"]) == 0
    shown = capsys.readouterr().out
    assert "0.8750" in shown and "candidate" in shown

    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "promote", "se-model", "1",
                 "--alias", "production"]) == 0
    assert str(mlflow_client.get_model_version_by_alias("se-model", "production").version) == "1"

    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "promote", "se-model", "7",
                 "--alias", "production"]) == 1
    assert "cannot promote se-model version 7" in capsys.readouterr().err
    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "show", "nope"]) == 1
