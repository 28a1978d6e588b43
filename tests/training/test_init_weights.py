"""`model.init.source`: every supported file format, attnlab runs and MLflow models, and the errors a bad source gives.

Source networks are torchvision/timm models built here with random weights (BatchNorm statistics and
affine parameters randomised too) and saved to files, as a user would save downloaded ones.
"""

import os
import re
from pathlib import Path

import pytest
import timm  # a test extra (pyproject.toml)
import torch
import torchvision

from modules.backbones import build_backbone
from training.config import ConfigError, validate_config
from tests.modules.test_pretrained_loading import randomise_norms
from training.init_weights import InitError, load, resolve


def run_config(backbone: str, source: str, *, family: str = "none", classes_root: str = "unused", **model) -> dict:
    return {"name": "finetune", "data": {"kind": "image", "dataset": "fashion_mnist", "root": classes_root},
            "model": {"family": family, "backbone": backbone, **model, "init": {"source": source}}}


def load_into(raw: dict, num_classes: int = 10, in_channels: int = 3):
    cfg = validate_config(raw)
    resolved = resolve(cfg)
    block = None if cfg.model.family == "none" else cfg.model.family
    block_kw = dict(cfg.model.block)
    net = build_backbone(cfg.model.backbone, num_classes=num_classes, in_channels=in_channels, block=block,
                         placement=cfg.model.placement if block else None, **block_kw).eval()
    return net, load(net, resolved, cfg)


SOURCES = [
    ("torchvision", "resnet18", "resnet18", {}),
    ("torchvision", "resnet50", "resnet50", {}),
    ("timm", "resnet18", "resnet18", {}),
    ("timm", "resnet50", "resnet50", {}),
    ("timm", "seresnet18", "resnet18", {"family": "se", "placement": "se-all", "block": {"divisor": 8}}),
    ("timm", "seresnet50", "resnet50", {"family": "se", "placement": "se-all"}),
    ("timm", "legacy_seresnet18", "resnet18_caffe", {"family": "se", "placement": "se-all"}),
    ("timm", "legacy_seresnet50", "resnet50_caffe", {"family": "se", "placement": "se-all"}),
]


@pytest.mark.parametrize(("library", "name", "backbone", "model"), SOURCES, ids=[f"{s[0]}-{s[1]}" for s in SOURCES])
def test_a_saved_torchvision_or_timm_network_loads_with_its_logits(library, name, backbone, model, tmp_path):
    torch.manual_seed(0)
    source = getattr(torchvision.models, name)(num_classes=10) if library == "torchvision" else \
        timm.create_model(name, num_classes=10)
    source = randomise_norms(source)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)

    net, report = load_into(run_config(backbone, str(path), **model))
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(image), source(image), rtol=1e-5, atol=1e-5)
    assert report.counts() == {"loaded": len(source.state_dict())}
    assert report.source["kind"] == "file" and report.source["path"] == str(path.resolve())
    assert len(report.source["sha256"]) == 64


def test_safetensors_and_timm_training_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    source = randomise_norms(timm.create_model("resnet18", num_classes=10))
    save_file(source.state_dict(), tmp_path / "model.safetensors")  # Hugging Face's timm weights
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": source.state_dict()}, tmp_path / "checkpoint.pth.tar")
    image = torch.randn(2, 3, 32, 32)
    for filename in ("model.safetensors", "checkpoint.pth.tar"):
        net, report = load_into(run_config("resnet18", str(tmp_path / filename)))
        with torch.no_grad():
            torch.testing.assert_close(net(image), source(image), rtol=1e-5, atol=1e-5)
        assert report.source_format == "torchvision/timm ResNet state dict"


def test_bad_files_fail_naming_the_source_and_what_was_expected(tmp_path):
    text, listing, r18 = tmp_path / "notes.pth", tmp_path / "list.pth", tmp_path / "resnet18.pth"
    text.write_text("not a checkpoint")
    torch.save([1, 2, 3], listing)
    torch.save(torchvision.models.resnet18().state_dict(), r18)
    cases = {
        str(tmp_path / "missing.pth"): "no such file; expected one of: a file (torchvision/timm state dict",
        str(text): "not a PyTorch checkpoint or safetensors file",
        str(listing): "the file holds a list, not a state dict of named tensors",
        str(r18): "the source is a ResNet with BasicBlocks, res2..res5 depths 2, 2, 2, 2 (ResNet-18); this "
                  "backbone has Bottlenecks, res2..res5 depths 3, 4, 6, 3 (ResNet-50)",
    }
    for source, expected in cases.items():
        with pytest.raises(InitError) as error:
            load_into(run_config("resnet50", source))
        assert f"model.init.source {source!r}" in str(error.value) and expected in str(error.value), str(error.value)


@pytest.mark.parametrize(("source", "expected"), [
    ("models:/", "not a model URI; expected models:/NAME@ALIAS or models:/NAME/VERSION"),
    ("runs:/xyz/model", "not a run URI; expected runs:/RUN_ID/PATH"),
])
def test_misspelled_uris_fail_at_config_validation(source, expected):
    with pytest.raises(ConfigError, match="model.init.source: .*" + re.escape(expected)):
        validate_config(run_config("resnet18", source))


def test_fine_tuning_controls_need_a_source():
    raw = run_config("resnet18", "x.pth")
    raw["model"]["init"] = {"freeze": "res3"}
    with pytest.raises(ConfigError, match="model.init: freeze needs model.init.source"):
        validate_config(raw)


# ---- attnlab runs and MLflow models --------------------------------------------------------------


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, shared_mlflow_uri, idx_root):
    """A tiny trained, registered SE-ResNet-18 (10 classes) in the shared store; its own ATTNLAB_HOME."""
    from training.fit import fit

    home = tmp_path_factory.mktemp("source-home")
    saved = os.environ.get("ATTNLAB_HOME")
    os.environ["ATTNLAB_HOME"] = str(home)
    try:
        raw = source_config("init-source", idx_root, shared_mlflow_uri)
        result = fit(validate_config(raw))
    finally:
        os.environ.pop("ATTNLAB_HOME") if saved is None else os.environ.__setitem__("ATTNLAB_HOME", saved)
    return result


def source_config(name: str, root, uri: str, **init) -> dict:
    return {
        "name": name,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": str(root), "batch_size": 16,
                 "num_workers": 0, "augment": False},
        "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-stage4", "reduction": 4,
                  **({"init": init} if init else {})},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "max_steps": 2, "limit_val_batches": 1,
                    "limit_test_batches": 1, "log_every_n_steps": 1, "enable_progress_bar": False},
        "tracking": {"uri": uri, "experiment": "init-tests", "register_as": f"{name}-model", "figures": False},
    }


@pytest.fixture(scope="module")
def registered_net(source_run, shared_mlflow_uri):
    """The source run's registered network (the bare network inside the registered classifier)."""
    from training.pyfunc_model import load_network

    return load_network("models:/init-source-model/1", shared_mlflow_uri)


ATTNLAB_SOURCES = ["checkpoint", "init-source", "run:init-source", "models:/init-source-model@candidate",
                   "models:/init-source-model/1", "runs:/{run_id}/model"]


@pytest.mark.slow  # trains and registers a source model (fit)
@pytest.mark.parametrize("form", ATTNLAB_SOURCES)
def test_attnlab_runs_and_registered_models_load_with_their_logits(form, source_run, registered_net, shared_mlflow_uri,
                                                                   idx_root):
    source = source_run.checkpoint if form == "checkpoint" else form.format(run_id=source_run.run_id)
    raw = source_config("init-target", idx_root, shared_mlflow_uri, source=source)
    cfg = validate_config(raw)
    net = build_backbone("resnet18_small", num_classes=10, in_channels=1, block="se", placement="se-stage4",
                         reduction=4).eval()
    report = load(net, resolve(cfg), cfg)
    image = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(image), registered_net(image), rtol=1e-5, atol=1e-5)
    assert report.counts() == {"loaded": len(net.state_dict())}
    assert report.source.get("run_id") == (None if form == "checkpoint" else source_run.run_id)
    if form.startswith("models:/"):
        assert report.source["model_uri"] == "models:/init-source-model/1" and report.source["model_version"] == "1"
    else:
        assert report.source.get("sha256") or form.startswith("runs:/")


@pytest.mark.slow  # trains and registers a source model (fit)
def test_a_run_whose_local_checkpoint_is_gone_loads_the_one_logged_to_mlflow(source_run, shared_mlflow_uri, idx_root):
    local = Path(source_run.checkpoint)
    moved = local.with_suffix(".away")
    local.rename(moved)
    try:
        cfg = validate_config(source_config("init-target", idx_root, shared_mlflow_uri, source="run:init-source"))
        resolved = resolve(cfg)
    finally:
        moved.rename(local)
    assert resolved.info.path != str(local) and Path(resolved.info.path).name == local.name
    assert resolved.info.run_id == source_run.run_id
    torch.testing.assert_close(resolved.state["fc.weight"], torch.load(local, weights_only=True)["state_dict"]["net.fc.weight"])


@pytest.mark.slow  # trains and registers a source model (fit)
def test_a_damaged_local_checkpoint_is_named_and_the_one_logged_to_mlflow_loads(source_run, shared_mlflow_uri,
                                                                                 idx_root):
    from training.checkpoints import ResumeWarning

    local = Path(source_run.checkpoint)
    original = local.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, one byte changed: only the SHA-256 sidecar notices
    local.write_bytes(bytes(flipped))
    try:
        cfg = validate_config(source_config("init-target", idx_root, shared_mlflow_uri, source="run:init-source"))
        with pytest.warns(ResumeWarning, match=re.escape(f"checkpoint {local} is damaged") + ".*SHA-256"):
            resolved = resolve(cfg)
    finally:
        local.write_bytes(original)
    assert resolved.info.path != str(local) and Path(resolved.info.path).name == local.name
    torch.testing.assert_close(resolved.state["fc.weight"], torch.load(local, weights_only=True)["state_dict"]["net.fc.weight"])


@pytest.mark.slow  # trains and registers a source model (fit)
@pytest.mark.parametrize(("source", "expected"), [
    ("models:/no-such-model@candidate", "no registered model named 'no-such-model'"),
    ("models:/init-source-model@production", "registered model 'init-source-model' has no alias 'production' "
                                             "(versions: 1; aliases: candidate=v1)"),
    ("models:/init-source-model/7", "has no version 7 (versions: 1;"),
    ("runs:/0123456789abcdef0123456789abcdef/model", "no MLflow run 0123456789abcdef0123456789abcdef"),
    ("no-such-run", "not a file, and no attnlab run named 'no-such-run' with a checkpoint"),
])
def test_unknown_models_and_runs_fail_naming_the_source(source, expected, source_run, shared_mlflow_uri, idx_root):
    cfg = validate_config(source_config("init-target", idx_root, shared_mlflow_uri, source=source))
    with pytest.raises(InitError) as error:
        resolve(cfg)
    assert f"model.init.source {source!r}" in str(error.value) and expected in str(error.value), str(error.value)


@pytest.mark.slow  # trains and registers a source model (fit)
def test_finetuning_a_registered_model_on_other_classes_through_attnlab_train(source_run, shared_mlflow_uri,
                                                                               tmp_path, capsys):
    """4 classes instead of 10: the head is re-initialised; the run and the new version name their source."""
    import yaml

    from datamodules.synthetic import write_idx_dataset
    from service.cli import main
    from training import tracking
    from training.init_tracking import FINETUNED_FROM_TAG, REPORT_JSON

    four = write_idx_dataset(tmp_path / "four", train=48, test=16, num_classes=4)
    raw = source_config("init-finetuned", four, shared_mlflow_uri, source="models:/init-source-model@candidate",
                        new_lr_multiplier=10.0, freeze="res2", frozen_bn=True)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "initial weights: source=models:/init-source-model@candidate" in printed
    assert "reinitialised fc.weight" in printed and "the source has 10 classes, this run 4" in printed

    client = tracking.client(shared_mlflow_uri)
    run = tracking.find_run(shared_mlflow_uri, "init-tests", "init-finetuned")
    tags = run.data.tags
    assert tags["attnlab.init.model_uri"] == "models:/init-source-model/1"
    assert tags["attnlab.init.run_id"] == source_run.run_id and tags["attnlab.init.kind"] == "model"
    assert run.data.params["model.init.source"] == "models:/init-source-model@candidate"
    report = client.download_artifacts(run.info.run_id, REPORT_JSON, str(tmp_path))
    assert yaml.safe_load(Path(report).read_text())["counts"]["reinitialised"] == 2
    version = client.get_model_version("init-finetuned-model", tags[tracking.VERSION_TAG])
    assert version.tags[FINETUNED_FROM_TAG] == "models:/init-source-model/1"
    assert "Fine-tuned from models:/init-source-model/1" in version.description


def test_a_bad_source_stops_attnlab_train_before_any_run_starts(shared_mlflow_uri, idx_root, tmp_path, capsys):
    import yaml

    from service.cli import main
    from training import tracking

    raw = source_config("init-bad-source", idx_root, shared_mlflow_uri, source=str(tmp_path / "nowhere.pth"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(path)]) == 2
    assert f"model.init.source '{tmp_path / 'nowhere.pth'}': no such file" in capsys.readouterr().err
    assert tracking.find_run(shared_mlflow_uri, "init-tests", "init-bad-source") is None


def test_describe_init_says_where_the_weights_came_from_for_a_model_card(tmp_path):
    from training.init_weights import describe_init

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    _, report = load_into(run_config("resnet18", str(path), family="se", placement="se-stage4"), num_classes=4)
    described = describe_init(report)
    assert described["source"] == str(path) and described["kind"] == "file" and len(described["sha256"]) == 64
    assert described["format"] == "torchvision/timm ResNet state dict"
    assert described["tensors"] == report.summary() and "new" in described["tensors"]
    assert describe_init(None) == {}
