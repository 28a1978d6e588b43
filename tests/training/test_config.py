"""The run config: every shipped YAML validates; bad configs fail before any work, naming the field
path and the allowed values; `--set a.b=value` overrides are YAML-parsed."""

from pathlib import Path

import pytest
import yaml

from training.cli import DEMO_CONFIG
from training.config import ConfigError, apply_override, flatten, load_config

# Run configs only: search configs (tuning/) are a run config plus a `search:` section.
CONFIGS = [path for path in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
           if "search" not in (yaml.safe_load(path.read_text()) or {})]
BASE = Path(__file__).parents[2] / "configs" / "se_resnet_cpu.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.model.family in ("nonlocal", "se", "selfattn", "none")


def test_every_family_has_a_full_and_a_cpu_config():
    families = {}
    for path in CONFIGS:
        cfg = load_config(path)
        families.setdefault(cfg.model.family, set()).add("cpu" if path.stem.endswith("_cpu") else "full")
    for family in ("nonlocal", "se", "selfattn"):
        assert families[family] == {"cpu", "full"}, family


def test_demo_config_ships_in_the_package_and_matches_configs_folder():
    assert DEMO_CONFIG.parent.name == "training"
    assert (Path(__file__).parents[2] / "configs" / "demo.yaml").read_text() == DEMO_CONFIG.read_text()
    cfg = load_config(DEMO_CONFIG)
    assert cfg.model.family == "se" and cfg.trainer.accelerator == "cpu" and cfg.tracking.register_as


@pytest.mark.parametrize("override, expected", [
    ("model.family=foo", "model.family: 'foo' is not one of nonlocal, se, selfattn, none"),
    ("model.colour=red", "model.colour: unknown field; allowed: family, backbone, placement"),
    ("data.kind=audio", "data.kind: 'audio' is not one of image, video"),
    ("data.batch_sizee=3", "data.batch_sizee: unknown field; allowed: root, batch_size"),
    ("trainer.precision=8", "trainer.precision: 8 is not one of 32-true, 32, bf16-mixed"),
    ("cluster.kind=slurm", "cluster.kind: 'slurm' is not one of local, ray"),
    ("optim.lr=-1", "optim.lr: Input should be greater than 0"),
    ("model.backbone=resnet51", "model.backbone: 'resnet51' is not one of"),
    ("model.placement=nl-5", "model.placement: placement preset 'nl-5': res3 index 3 is out of range"),
    ("model.placement={res9: [0]}", "model.placement: placement: unknown stage 'res9'"),
    ("model.block={mode: dot_product}", "model.block: unknown option(s) mode for family 'se'; allowed: "
                                        "divisor, excitation, integration, squeeze"),
    ("model.block={squeeze: median}", "model.block: SqueezeExcite: squeeze must be one of ['avg', 'max']"),
    ("name=has space", "name: String should match pattern"),
])
def test_bad_config_names_the_field_and_allowed_values(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(BASE, [override])
    assert expected in str(error.value)


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        load_config(BASE, ["optim.name=adam", "trainer.max_epochs=0"])
    message = str(error.value)
    assert "optim.name: 'adam' is not one of sgd, adamw" in message
    assert "trainer.max_epochs: Input should be greater than or equal to 1" in message


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(BASE, ["optim.lr=1e-3", "optim.milestones=[2, 4]", "model.block={squeeze: max}",
                             "tracking.register_as=null", "model.placement={res3: all}"])
    assert cfg.optim.lr == 0.001 and cfg.optim.milestones == [2, 4]
    assert cfg.model.block == {"squeeze": "max"} and cfg.model.placement == {"res3": "all"}
    assert cfg.tracking.register_as is None
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_override({}, "optim.lr")


def test_flattened_params_cover_every_section():
    params = flatten(load_config(BASE))
    assert params["model.family"] == "se" and params["optim.lr"] == 0.1 and params["cluster.kind"] == "local"
    assert params["data.kind"] == "image" and "trainer.max_epochs" in params


def test_cli_rejects_a_bad_config_before_any_work(tmp_path, attnlab_home, capsys):
    from service.cli import main

    raw = yaml.safe_load(BASE.read_text())
    raw["model"]["famly"] = "se"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(path)]) == 2
    assert "model.famly: unknown field" in capsys.readouterr().err
    assert not (attnlab_home / "mlflow.db").exists() and not (attnlab_home / "runs").exists()


def test_tracking_state_is_restored_after_mlflow_exports_its_uri(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; fit must not leave one run's store behind."""
    import os

    import mlflow

    from training import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.isolated_tracking_state():
        mlflow.set_tracking_uri("sqlite:////tmp/elsewhere.db")
        assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////tmp/elsewhere.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.tracking_uri() == tracking.default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    with tracking.isolated_tracking_state():
        mlflow.set_tracking_uri("sqlite:////tmp/elsewhere.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
