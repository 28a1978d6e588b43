"""`POST /data-checks` over real HTTP: the check runs as a job process (the API process loads neither torch nor a
video decoder), its report comes back through the job's MLflow run; bad bodies are 4xx naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _check_body(root: str, **data) -> dict:
    return {"config": {"name": "clips", "data": {"kind": "video", "dataset": "folder", "root": root, "clip_len": 4,
                                                 "frame_interval": 2, "short_side": 32, "crop_size": 32, **data},
                       "model": {"family": "none", "backbone": "c2d_resnet_tiny"},  # a whole run config is fine
                       "tracking": {"experiment": "service-tests"}}}


def _loaded_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_data_check_job_reports_through_its_mlflow_run(start_service, data_root):
    from datamodules.synthetic import make_motion_videos

    make_motion_videos(data_root / "clips", num_classes=2, videos_per_class=2, frames=16, size=(32, 32))
    (data_root / "clips" / "up" / "zero.mp4").write_bytes(b"")
    service = start_service()
    with service.client() as client:
        submitted = client.post("/data-checks", json=_check_body("clips", max_bad_fraction=0.5))
        assert submitted.status_code == 201, submitted.text
        job = service.wait_for(submitted.json()["id"], ("SUCCEEDED", "FAILED"))
        assert (job["state"], job["kind"], job["name"]) == ("SUCCEEDED", "data_check", "clips.data-check"), job
        assert job["mlflow_run_id"] and job["metrics"]["data_check/files"] == 5
        assert job["metrics"]["data_check/bad_files"] == 1 and job["metrics"]["data_check/bad_fraction"] == 0.2
        assert job["config"]["data"]["root"] == str(data_root / "clips")  # resolved inside the data root
        log = client.get(f"/jobs/{job['id']}/logs").text
        assert "folder layout" in log and "empty: 1" in log and "verdict: ok" in log
        listed = client.get("/jobs", params={"kind": "data_check"}).json()
        assert [item["id"] for item in listed["items"]] == [job["id"]]
    libraries = _loaded_libraries(service.process.pid)
    assert "libtorch" not in libraries and "decord" not in libraries and "libavcodec" not in libraries


@pytest.mark.parametrize("data, field, message", [
    ({"root": "/etc"}, "config.data.root", "outside the configured data roots"),
    ({"root": "clips", "dataset": "ucf101", "annotations": "../../etc"}, "config.data.annotations",
     "outside the configured data roots"),
    ({"root": "clips", "kind": "image"}, "config.data.kind", "video"),
    ({"root": "clips", "dataset": "youtube8m"}, "config.data.dataset", "ucf101"),
])
def test_bad_data_check_bodies_are_refused_naming_the_field(queue_service, data, field, message):
    body = _check_body("clips")
    body["config"]["data"].update(data)
    with queue_service.client() as client:
        response = client.post("/data-checks", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["message"] and message in response.json()["message"]


def test_data_checks_need_the_token(queue_service):
    with queue_service.client(token=None) as client:
        assert client.post("/data-checks", json=_check_body("clips")).status_code == 401
