"""Over real HTTP: registered versions show their contract and card, and POST /evaluations runs
`attnlab evaluate` as a job while the API process itself never loads a model (nor torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.image import FASHION_MNIST_CLASSES
from tests.service.conftest import tiny_train_config
from training import tracking

pytestmark = pytest.mark.slow


def _register(home: Path, data_root: Path, name: str) -> str:
    """Log and register an untrained SE network with its contract, as training would (no training needed)."""
    from training.config import validate_config
    from training.fit import build_parts
    from training.model_card import build_contract

    config = tiny_train_config("registered", data=str(data_root / "tiny-fmnist"))
    cfg = validate_config(config)
    datamodule, module = build_parts(cfg)
    datamodule.setup("test")
    example = next(iter(datamodule.test_dataloader()))[0]
    uri = f"sqlite:///{home / 'mlflow.db'}"
    run = tracking.client(uri).create_run(tracking.experiment_id(uri, "registered"))
    contract = build_contract(cfg, datamodule, {"test/acc": 0.25}, run.info.run_id)
    return tracking.log_classifier(uri, run.info.run_id, module.net, example, contract, name, alias="candidate")


def _register_without_contract(home: Path, name: str) -> str:
    from modules.backbones import build_backbone

    uri = f"sqlite:///{home / 'mlflow.db'}"
    run = tracking.client(uri).create_run(tracking.experiment_id(uri, "registered"))
    net = build_backbone("resnet18_small", num_classes=10, in_channels=1)
    return tracking.log_pytorch_model(uri, run.info.run_id, net, torch.randn(2, 1, 28, 28), name, alias=None)


def test_evaluation_jobs_score_registered_models_without_loading_them_in_the_api(
        start_service, idx_data, data_root, attnlab_home):
    service = start_service()
    assert _register(attnlab_home, data_root, "svc-eval") == "1"
    _register_without_contract(attnlab_home, "svc-old")
    with service.client() as client:
        version = client.get("/models/svc-eval").json()["versions"][0]
        assert version["contract"]["classes"] == FASHION_MNIST_CLASSES
        assert version["contract"]["input"] == {"kind": "image", "channels": 1, "shape": [1, 28, 28]}
        assert version["contract"]["model"]["family"] == "se" and version["contract"]["init"] == "random"
        assert client.get("/models/svc-old").json()["versions"][0]["contract"] is None
        card = client.get("/models/svc-eval/versions/1/card")
        assert card.status_code == 200 and card.headers["content-type"].startswith("text/markdown")
        assert card.text.startswith("# svc-eval") and "Preprocessing" in card.text
        missing = client.get("/models/svc-old/versions/1/card")
        assert missing.status_code == 404 and "no model card" in missing.json()["message"]

        user = client.post("/users", json={"name": "alice", "role": "user"}).json()["token"]
        viewer = client.post("/users", json={"name": "vera", "role": "viewer"}).json()["token"]

        config = {"model": "models:/svc-eval@candidate",
                  "data": {"kind": "image", "dataset": "fashion_mnist", "root": idx_data, "batch_size": 8}}
        with service.client(token=viewer) as vera, service.client(token=user) as alice:
            assert vera.get("/models/svc-eval/versions/1/card").text == card.text
            assert vera.get("/models/svc-eval").json()["versions"][0]["contract"]["classes"] == FASHION_MNIST_CLASSES
            assert vera.post("/evaluations", json={"config": config}).status_code == 403
            submitted = alice.post("/evaluations", json={"config": config})
        assert submitted.status_code == 201, submitted.text
        job = submitted.json()
        assert job["kind"] == "evaluate" and job["name"] == "eval-svc-eval-candidate" and job["owner"] == "alice"
        audited = {(entry["actor"], entry["action"], entry["target"], entry["outcome"])
                   for entry in client.get("/audit", params={"limit": 1000}).json()["items"]}
        assert ("alice", "evaluate.submit", f"job {job['id']}", "ok") in audited
        assert ("vera", "write", "service", "denied") in audited

        refused = {
            "runs:/0123/classifier": "registered models only",
            "models:/nope/1": "nope",
            "models:/svc-eval@production": "production",
            "models:/svc-old/1": "has no attnlab contract",
        }
        for model, message in refused.items():
            response = client.post("/evaluations", json={"config": {**config, "model": model}})
            assert response.status_code == 422, response.text
            assert response.json()["message"].startswith("config.model: ") and message in response.json()["message"]
        outside = client.post("/evaluations", json={"config": {**config, "data": {**config["data"], "root": "/etc"}}})
        assert outside.status_code == 422 and outside.json()["message"].startswith("config.data.root: ")
        with service.client(token=None) as anonymous:
            assert anonymous.post("/evaluations", json={"config": config}).status_code == 401
            assert anonymous.get("/models/svc-eval/versions/1/card").status_code == 401

    done = service.wait_for(job["id"], ("SUCCEEDED", "FAILED"), timeout=300)
    assert done["state"] == "SUCCEEDED", (service.home / "jobs" / str(job["id"]) / "job.log").read_text()[-3000:]
    assert done["mlflow_run_id"] and done["metrics"]["eval/samples"] == 16
    assert 0.0 <= done["metrics"]["eval/acc"] <= 1.0
    mapped = Path(f"/proc/{service.process.pid}/maps").read_text()
    assert "libtorch" not in mapped and "libc10" not in mapped
