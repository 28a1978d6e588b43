"""Fine-tuning through the service: a job config with model.init is an ordinary training job."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.configs import ConfigRejected, prepare_config
from service.settings import Settings
from tests.service.conftest import tiny_train_config


def test_a_weights_file_must_lie_inside_a_data_root_and_uris_pass_unchanged(attnlab_home: Path):
    root = attnlab_home / "data"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "r18.pth").write_bytes(b"")
    settings = Settings(home=attnlab_home, data_roots=[root])

    prepared = prepare_config({"model": {"init": {"source": "weights/r18.pth"}}}, settings)
    assert prepared["model"]["init"]["source"] == str(root / "weights" / "r18.pth")
    for source in ("models:/base@champion", "runs:/0123456789abcdef0123456789abcdef/model", "my-run", "run:my-run"):
        assert prepare_config({"model": {"init": {"source": source}}}, settings)["model"]["init"]["source"] == source
    with pytest.raises(ConfigRejected) as raised:
        prepare_config({"model": {"init": {"source": "/etc/passwd"}}}, settings)
    assert raised.value.loc == ("model", "init", "source")
    with pytest.raises(ConfigRejected):
        prepare_config({"search": {"space": {"model.init.source": {"grid": ["../../x.pth"]}}}}, settings)


@pytest.mark.slow
def test_a_finetuning_job_starts_from_a_registered_model_with_another_class_count(start_service, idx_data,
                                                                                   data_root, attnlab_home):
    from datamodules.synthetic import write_idx_dataset
    from training import tracking
    from training.init_tracking import FINETUNED_FROM_TAG

    write_idx_dataset(data_root / "four-classes", train=48, test=16, num_classes=4)
    service = start_service()
    source = tiny_train_config("svc-ft-source", data=idx_data, register_as="svc-ft-source")
    target = tiny_train_config("svc-ft-target", data="four-classes", register_as="svc-ft-target")
    target["model"]["init"] = {"source": "models:/svc-ft-source@candidate", "new_lr_multiplier": 10.0}
    with service.client() as client:
        first = client.post("/jobs", json={"config": source}).json()["id"]
        assert service.wait_for(first, ("SUCCEEDED", "FAILED"), timeout=300)["state"] == "SUCCEEDED"
        bad = {**target, "name": "svc-ft-bad", "model": {**target["model"], "init": {"source": "models:/nope@x"}}}
        failing = client.post("/jobs", json={"config": bad}).json()["id"]
        second = client.post("/jobs", json={"config": target}).json()["id"]
        job = service.wait_for(second, ("SUCCEEDED", "FAILED"), timeout=300)
        failed = service.wait_for(failing, ("SUCCEEDED", "FAILED"), timeout=60)
        log = client.get(f"/jobs/{failing}/logs").text
    assert job["state"] == "SUCCEEDED" and job["model_version"] == "1"
    assert failed["state"] == "FAILED" and "model.init.source 'models:/nope@x': no registered model named 'nope'" in log

    client = tracking.client(tracking.default_tracking_uri())
    run = client.get_run(job["mlflow_run_id"])
    assert run.data.tags["attnlab.init.model_uri"] == "models:/svc-ft-source/1"
    assert run.data.tags["attnlab.init.run_name"] == "svc-ft-source"
    assert client.get_model_version("svc-ft-target", "1").tags[FINETUNED_FROM_TAG] == "models:/svc-ft-source/1"
