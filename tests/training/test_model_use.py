"""Registered models are usable on raw inputs: one tiny model per family trained through `attnlab train`
with registration, then used from Python (pyfunc), `attnlab predict`, `attnlab evaluate` and
`attnlab registry show`, against the trained LightningModule's own predictions and logged metrics."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from datamodules.idx import load_idx_split
from datamodules.image import FASHION_MNIST_CLASSES
from datamodules.transforms import image_transform
from service.cli import main
from training import tracking
from training.config import load_config
from training.evaluate import MODEL_TAG
from training.fit import build_parts
from training.pyfunc_model import load_network

pytestmark = pytest.mark.slow

FAMILIES = {
    "se": dict(backbone="resnet18_small", placement="se-stage4", reduction=4),
    "selfattn": dict(backbone="resnet18_small", placement="sa-stage4", block={"heads": 4}),
    "nonlocal": None,  # video: c2d_resnet_tiny with nl-5 on motion clips
}


def _config(family, idx_root, video_root, uri, configs) -> dict:
    if FAMILIES[family] is None:
        config = configs.video(f"use-{family}", video_root)
    else:
        config = configs.image(f"use-{family}", idx_root, family, **FAMILIES[family])
        # a data-level test subset: `attnlab evaluate` on the same data config sees the same samples
        config["trainer"]["limit_test_batches"] = None
        config["data"]["limit_test"] = 24
    config["tracking"].update(uri=uri, register_as=f"use-{family}", figures=False)
    return config


@pytest.fixture(scope="module")
def trained(idx_root, video_root, shared_mlflow_uri, tmp_path_factory, configs):
    """family -> (TrainConfig, its YAML file, MLflow run) of a model trained and registered by `attnlab train`."""
    home = tmp_path_factory.mktemp("use-home")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:  # module scope: the per-test home fixture is not active yet
        patch.setenv("ATTNLAB_HOME", str(home))
        for family in FAMILIES:
            path = configs.write(home / f"{family}.yaml",
                                 _config(family, idx_root, video_root, shared_mlflow_uri, configs))
            assert main(["train", "--config", str(path)]) == 0
            cfg = load_config(path)
            run = tracking.find_run(shared_mlflow_uri, cfg.tracking.experiment, cfg.name)
            assert run.data.tags[tracking.VERSION_TAG] == "1"
            runs[family] = (cfg, path, run)
    return runs


def _uri(family: str) -> str:
    return f"models:/use-{family}@candidate"


def _lightning_module(cfg, run):
    """The trained LightningModule with the weights the registered network holds (the tested checkpoint)."""
    datamodule, module = build_parts(cfg)
    checkpoint = torch.load(run.data.tags[tracking.CHECKPOINT_TAG], map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    return datamodule, module.eval()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw_files(family, cfg, datamodule, folder):
    """(files given to the model, a function: LightningModule -> its probabilities on those files)."""
    if FAMILIES[family] is None:
        datamodule.setup("test")
        dataset = datamodule.datasets["test"]  # each item: all test clips of one video, (K, C, T, S, S)
        files = [record.path for record in dataset.records]
        return files, lambda module: torch.cat([module.predict_probabilities(dataset[i][0][None])
                                                for i in range(len(files))])
    _, (images, _) = (load_idx_split(Path(cfg.data.root), part) for part in ("train", "t10k"))
    folder.mkdir()
    files = []
    for index, image in enumerate(images[:6]):
        files.append(str(folder / f"test-{index}.png"))
        (folder / f"test-{index}.png").write_bytes(_png(image))
    transform = image_transform(cfg.data.dataset, train=False)  # the DataModule's test transform
    tensors = torch.stack([transform(torch.from_numpy(image)[None]) for image in images[:6]])
    return files, lambda module: module.predict_probabilities(tensors)


def _predict(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["predict", *arguments])
    return code, out.getvalue()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_registered_model_predicts_raw_files_like_the_lightning_module(family, trained, shared_mlflow_uri,
                                                                       tmp_path):
    cfg, _, run = trained[family]
    datamodule, module = _lightning_module(cfg, run)
    files, reference = _raw_files(family, cfg, datamodule, tmp_path / "inputs")
    with torch.inference_mode():
        expected = reference(module)
    classes = list(datamodule.class_names)

    mlflow.set_tracking_uri(shared_mlflow_uri)
    model = mlflow.pyfunc.load_model(_uri(family))
    assert model.metadata.metadata["attnlab"]["classes"] == classes
    by_path = model.predict({"path": files}, params={"top_k": len(classes)})
    by_bytes = model.predict({"content": [open(f, "rb").read() for f in files]}, params={"top_k": len(classes)})
    for predictions in (by_path, by_bytes):
        assert len(predictions) == len(files)
        for row, probabilities in zip(predictions.itertuples(), expected):
            assert row.label == classes[int(probabilities.argmax())]
            got = dict(zip(row.classes, row.probabilities))
            assert max(abs(got[name] - float(p)) for name, p in zip(classes, probabilities)) < 1e-5

    # `attnlab predict` on the files' folder: the same top-3 classes and probabilities
    folder = str(tmp_path / "inputs") if FAMILIES[family] else str(cfg.data.root)
    code, out = _predict("--model", _uri(family), "--tracking-uri", shared_mlflow_uri, "--json", "--top-k", "3",
                         folder)
    assert code == 0
    rows = {row["input"]: row for row in json.loads(out)}
    assert set(files) <= set(rows)
    for path, expected_row in zip(files, by_path.itertuples()):
        assert rows[path]["classes"] == list(expected_row.classes)[:min(3, len(classes))]
        assert np.allclose(rows[path]["probabilities"], expected_row.probabilities[:len(rows[path]["classes"])],
                           atol=1e-6)


def test_predict_reports_unreadable_files_and_predicts_the_rest(trained, shared_mlflow_uri, tmp_path, capsys):
    _, (images, _) = (load_idx_split(Path(trained["se"][0].data.root), part) for part in ("train", "t10k"))
    (tmp_path / "a.png").write_bytes(_png(images[0]))
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    (tmp_path / "c.png").write_bytes(_png(np.stack([images[1]] * 3, axis=-1)))  # RGB: the model takes grayscale
    (tmp_path / "d.png").write_bytes(_png(images[2]))
    code, _ = _predict("--model", _uri("se"), "--tracking-uri", shared_mlflow_uri, "--output",
                       str(tmp_path / "out.csv"), str(tmp_path), str(tmp_path / "missing.png"))
    assert code == 1
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    by_file = {row["input"].rsplit("/", 1)[-1]: row for row in rows}
    assert set(by_file) == {"a.png", "b.png", "c.png", "d.png", "missing.png"}
    assert "not a readable image" in by_file["b.png"]["error"]
    assert "RGB image" in by_file["c.png"]["error"] and "1 channel, grayscale" in by_file["c.png"]["error"]
    assert "no such file" in by_file["missing.png"]["error"]
    for good in ("a.png", "d.png"):
        assert by_file[good]["error"] == "" and by_file[good]["label"] in FASHION_MNIST_CLASSES
        assert len(by_file[good]["classes"].split(";")) == 5 and 0 < float(by_file[good]["probability"]) <= 1
    assert "3 of 5 inputs failed" in capsys.readouterr().err


@pytest.mark.parametrize("family", list(FAMILIES))
def test_evaluate_reproduces_the_logged_test_accuracy(family, trained, shared_mlflow_uri, capsys):
    cfg, path, run = trained[family]
    arguments = ["evaluate", "--model", _uri(family), "--tracking-uri", shared_mlflow_uri]
    if family == "se":
        arguments += ["--data", str(path)]  # the run config: its data section and seed
    assert main(arguments) == 0
    evaluation = tracking.find_run(shared_mlflow_uri, "attnlab-evaluations", f"eval-use-{family}-candidate")
    metrics = evaluation.data.metrics
    assert metrics["eval/acc"] == run.data.metrics["test/acc"]
    assert evaluation.data.tags[f"{MODEL_TAG}.version"] == "1"
    assert evaluation.data.tags[f"{MODEL_TAG}.run_id"] == run.info.run_id
    artifacts = {item.path for item in tracking.client(shared_mlflow_uri).list_artifacts(evaluation.info.run_id,
                                                                                        "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/predictions.csv"} <= artifacts
    if family == "nonlocal":
        assert 0.0 <= metrics["eval/clip_acc"] <= 1.0 and metrics["eval/samples"] == 2  # two test videos
    else:
        assert metrics["eval/samples"] == 24 and metrics["eval/acc_top5"] == run.data.metrics["test/acc_top5"]
        per_class = {key.removeprefix("eval/"): value for key, value in metrics.items() if "acc_class" in key}
        assert len(per_class) == 10
        assert per_class == {key.removeprefix("test/"): value for key, value in run.data.metrics.items()
                             if "acc_class" in key}
    version = tracking.client(shared_mlflow_uri).get_model_version(f"use-{family}", "1")
    assert evaluation.info.run_id in version.tags["attnlab.evaluation"]
    assert "eval/acc" in capsys.readouterr().out


def test_inputs_the_contract_cannot_take_fail_naming_it(trained, shared_mlflow_uri, video_root):
    mlflow.set_tracking_uri(shared_mlflow_uri)
    image_model, video_model = mlflow.pyfunc.load_model(_uri("se")), mlflow.pyfunc.load_model(_uri("nonlocal"))
    _, (images, _) = (load_idx_split(Path(trained["se"][0].data.root), part) for part in ("train", "t10k"))
    video = next(video_root.rglob("*.mp4"))
    cases = [
        (video_model, {"content": [_png(images[0])]}, "an image; this model takes video files"),
        (image_model, {"path": [str(video)]}, "not a readable image"),
        (image_model, {"content": [np.zeros((28, 28, 3), np.uint8)]}, "3 channels; this model takes images (1 channel"),
        (image_model, {"content": [np.zeros((28, 28), np.float32)]}, "a float32 array"),
        (image_model, {"file": ["x.png"]}, "needs a 'content'"),
    ]
    for model, given, message in cases:
        with pytest.raises(MlflowException, match="attnlab|model") as raised:
            model.predict(given)
        assert message in raised.value.message and "[model: " in raised.value.message
    with pytest.raises(MlflowException, match="top_k must be"):
        image_model.predict({"content": [_png(images[0])]}, params={"top_k": 0})


def test_registry_show_prints_each_versions_contract_and_card(trained, shared_mlflow_uri, capsys):
    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "show", "use-se"]) == 0
    shown = capsys.readouterr().out
    assert "se / resnet18_small" in shown and "image 1x28x28, 10 classes" in shown
    assert "Preprocessing" in shown and "T-shirt/top" in shown and "initial weights" in shown
    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "show", "use-nonlocal", "--version", "1"]) == 0
    shown = capsys.readouterr().out
    assert "video 3x4x32x32, 2 classes" in shown and "2 clips" in shown


def test_a_model_logged_without_a_contract_loads_and_predict_says_what_is_missing(
        trained, shared_mlflow_uri, tmp_path, capsys):
    from modules.backbones import build_backbone

    net = build_backbone("resnet18_small", num_classes=10, in_channels=1)
    client = tracking.client(shared_mlflow_uri)
    run = client.create_run(tracking.experiment_id(shared_mlflow_uri, "old-models"))
    version = tracking.log_pytorch_model(shared_mlflow_uri, run.info.run_id, net, torch.randn(2, 1, 28, 28),
                                         "old-model", alias=None)
    mlflow.set_tracking_uri(shared_mlflow_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/old-model/{version}")
    assert loaded.predict(np.random.rand(3, 1, 28, 28).astype(np.float32)).shape == (3, 10)

    (tmp_path / "x.png").write_bytes(_png(np.zeros((28, 28), np.uint8)))
    code, _ = _predict("--model", f"models:/old-model/{version}", "--tracking-uri", shared_mlflow_uri,
                       str(tmp_path / "x.png"))
    err = capsys.readouterr().err
    assert code == 2
    assert "has no attnlab contract" in err and "class names" in err and "preprocessing" in err
    assert "(B, 1, 28, 28)" in err
    assert main(["registry", "--tracking-uri", shared_mlflow_uri, "show", "old-model"]) == 0
    assert "no contract" in capsys.readouterr().out

    # the bare network (e.g. to fine-tune from) loads from old versions and from classifiers alike
    for uri in (f"models:/old-model/{version}", _uri("se")):
        network = load_network(uri, shared_mlflow_uri)
        assert network(torch.randn(3, 1, 28, 28)).shape == (3, 10) and "conv1.weight" in network.state_dict()
    assert set(load_network(f"models:/old-model/{version}", shared_mlflow_uri).state_dict()) == set(net.state_dict())


def _serve(model_uri: str, tracking_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` of a registered model on a free loopback port, in its own process group."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model_uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    # the project's environment, as an activated venv has it: mlflow starts `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def _wait_until_serving(process: subprocess.Popen, url: str, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mlflow models serve exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow models serve did not answer in {timeout} s: {log.read_text()[-3000:]}")


def _invoke(url: str, content: list[bytes], top_k: int) -> httpx.Response:
    rows = [[base64.b64encode(item).decode()] for item in content]
    body = {"dataframe_split": {"columns": ["content"], "data": rows},
            "params": {"top_k": top_k}}
    return httpx.post(f"{url}/invocations", json=body, timeout=120)


def test_mlflow_models_serve_answers_raw_images_and_videos_over_http(trained, shared_mlflow_uri, tmp_path):
    _, (images, _) = (load_idx_split(Path(trained["se"][0].data.root), part) for part in ("train", "t10k"))
    png = _png(images[3])
    video = Path(trained["nonlocal"][0].data.root).rglob("*.mp4").__next__().read_bytes()
    servers = {family: _serve(_uri(family), shared_mlflow_uri, tmp_path / f"{family}.log")
               for family in ("se", "nonlocal")}
    try:
        for family, (process, url) in servers.items():
            _wait_until_serving(process, url, tmp_path / f"{family}.log")
        mlflow.set_tracking_uri(shared_mlflow_uri)
        for family, given in (("se", png), ("nonlocal", video)):
            answer = _invoke(servers[family][1], [given], top_k=2)
            assert answer.status_code == 200, answer.text
            (served,) = answer.json()["predictions"]
            (local,) = mlflow.pyfunc.load_model(_uri(family)).predict(
                {"content": [given]}, params={"top_k": 2}).to_dict("records")
            assert served["label"] == local["label"] and served["classes"] == list(local["classes"])
            assert np.allclose(served["probabilities"], local["probabilities"], atol=1e-5)
        refused = _invoke(servers["nonlocal"][1], [png], top_k=1)
        assert refused.status_code == 400 and "an image; this model takes video files" in refused.text
    finally:
        for process, _ in servers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
