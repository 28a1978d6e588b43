"""The evaluation config: model URIs, data choices, run names, and its errors on the command line."""

import pytest
from pydantic import ValidationError

from service.cli import main
from training.evaluation_config import EvaluationConfig, FolderData


@pytest.mark.parametrize("model, name", [("models:/se-r18/3", "eval-se-r18-3"),
                                         ("models:/se-r18@champion", "eval-se-r18-champion"),
                                         ("runs:/0123abcd/classifier", "eval-0123abcd")])
def test_run_name_follows_the_model(model, name):
    assert EvaluationConfig(model=model).run_name == name
    assert EvaluationConfig(model=model, name="mine").run_name == "mine"


def test_data_is_a_data_config_or_a_class_folder_tree():
    assert isinstance(EvaluationConfig(model="models:/m/1", data={"kind": "folder", "root": "x"}).data, FolderData)
    assert EvaluationConfig(model="models:/m/1", data={"kind": "video", "root": "v"}).data.kind == "video"
    with pytest.raises(ValidationError, match="is not models:/NAME/VERSION or models:/NAME@ALIAS"):
        EvaluationConfig(model="models:/m")


def test_bad_evaluation_configs_are_refused_naming_each_field(tmp_path, capsys):
    path = tmp_path / "eval.yaml"
    path.write_text("model: models:/a/1\nfoo: 1\ndata: {kind: image, dataset: bogus}\n")
    assert main(["evaluate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"invalid evaluation config {path}:" in err
    assert "data.dataset: Input should be 'fashion_mnist'" in err and "foo: Extra inputs are not permitted" in err
    assert main(["evaluate", "--model", "models:/a/1", "--data", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
