"""Over real HTTP on a queue-only service (slots=0): auth, path confinement, limits, error shapes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.service.conftest import tiny_train_config

pytestmark = pytest.mark.slow  # a real `attnlab serve` subprocess


@pytest.fixture
def service(queue_service):
    return queue_service


@pytest.fixture
def data_root(queue_service):
    return queue_service.home / "data"


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/jobs", {"config": tiny_train_config("auth")}),
    ("POST", "/searches", {"config": {**tiny_train_config("auth"), "search": {"space": {}}}}),
    ("POST", "/jobs/1/cancel", None),
    ("PUT", "/models/any/aliases/champion", {"version": "1"}),
])
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_mutating_routes_refuse_missing_or_wrong_token(service, method, path, body, token):
    with service.client(token=token) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == 401
    assert "token" in response.json()["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_reads_need_a_token_but_health_does_not(service):
    with service.client(token=None) as client:
        response = client.get("/jobs")
        assert response.status_code == 401 and "ATTNLAB_OPEN_READS" in response.json()["message"]
        assert client.get("/models").status_code == 401
        assert client.get("/health").json()["status"] == "ok"
    with service.client() as client:
        assert client.get("/jobs").status_code == 200


@pytest.mark.parametrize("root", ["../../etc", "/etc", "tiny/../../..", "~/../.."])
def test_data_paths_outside_the_data_roots_are_refused(service, root):
    config = tiny_train_config("escape", data=root)
    with service.client() as client:
        response = client.post("/jobs", json={"config": config})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "config", "data", "root"]
    assert response.json()["message"].startswith("config.data.root: ")


def test_symlink_out_of_the_data_root_is_refused(service, data_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (data_root / "sneaky").symlink_to(outside)
    with service.client() as client:
        response = client.post("/jobs", json={"config": tiny_train_config("link", data="sneaky")})
    assert response.status_code == 422
    assert "resolves outside the configured data roots" in response.json()["message"]


def test_output_paths_and_foreign_tracking_stores_are_refused(service):
    storage = tiny_train_config("out")
    storage["cluster"] = {"storage_path": "/tmp/elsewhere"}
    tracking = tiny_train_config("uri")
    tracking["tracking"]["uri"] = "sqlite:////tmp/other.db"
    with service.client() as client:
        stored = client.post("/jobs", json={"config": storage}).json()
        tracked = client.post("/jobs", json={"config": tracking}).json()
    assert stored["message"].startswith("config.cluster.storage_path: '/tmp/elsewhere' resolves outside")
    assert tracked["message"].startswith("config.tracking.uri: jobs log to the service's tracking store")


def test_relative_data_root_is_stored_resolved_inside_the_root(service, data_root):
    (data_root / "fmnist").mkdir()
    with service.client() as client:
        job = client.post("/jobs", json={"config": tiny_train_config("ok", data="fmnist")}).json()
        shown = client.get(f"/jobs/{job['id']}").json()
    assert shown["config"]["data"]["root"] == str((data_root / "fmnist").resolve())


@pytest.mark.parametrize("change, field", [
    ({"model": {"family": "se", "backbone": "builtins.eval", "placement": "se-all"}}, "model.backbone"),
    ({"model": {"family": "modules.blocks:Evil", "backbone": "resnet18_small"}}, "config.model.family"),
    ({"data": {"kind": "image", "dataset": "imagenet"}}, "config.data.dataset"),
    ({"trainer": {"max_epochs": 0}}, "config.trainer.max_epochs"),
    ({"surprise": 1}, "config.surprise"),
])
def test_invalid_configs_are_422_naming_the_field(service, change, field):
    with service.client() as client:
        response = client.post("/jobs", json={"config": {**tiny_train_config("bad"), **change}})
    assert response.status_code == 422
    assert field in response.json()["message"]


def test_oversized_and_malformed_bodies_are_4xx(service):
    with service.client() as client:
        big = client.post("/jobs", content=b"{" + b" " * 30000 + b"}", headers={"content-type": "application/json"})
        chunked = client.post("/jobs", content=iter([b"{", b" " * 30000, b"}"]),
                              headers={"content-type": "application/json"})
        broken = client.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
        missing = client.get("/jobs/999")
        bad_id = client.get("/jobs/abc")
    assert big.status_code == 413 and "ATTNLAB_MAX_REQUEST_BYTES" in big.json()["message"]
    assert chunked.status_code == 413
    assert broken.status_code == 422
    assert missing.status_code == 404 and missing.json()["message"] == "no job 999"
    assert bad_id.status_code == 422 and bad_id.json()["message"].startswith("path.job_id")


def test_idempotency_key_reused_with_another_config_is_a_conflict(service):
    with service.client() as client:
        first = client.post("/jobs", json={"config": tiny_train_config("a"), "idempotency_key": "same-key"})
        again = client.post("/jobs", json={"config": tiny_train_config("a"), "idempotency_key": "same-key"})
        other = client.post("/jobs", json={"config": tiny_train_config("b"), "idempotency_key": "same-key"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    assert other.json()["detail"][0]["loc"] == ["body", "idempotency_key"]


def test_cancel_of_a_queued_job_is_immediate_and_final(service):
    with service.client() as client:
        job = client.post("/jobs", json={"config": tiny_train_config("c")}).json()
        cancelled = client.post(f"/jobs/{job['id']}/cancel").json()
        listed = client.get("/jobs", params={"state": "CANCELLED"}).json()
    assert cancelled["state"] == "CANCELLED" and cancelled["finished_at"]
    assert job["id"] in [item["id"] for item in listed["items"]]
    with sqlite3.connect(service.home / "jobs.db") as db:
        stored = db.execute("SELECT state, config FROM jobs WHERE id = ?", (job["id"],)).fetchone()
    assert stored[0] == "CANCELLED" and json.loads(stored[1])["name"] == "c"


def test_the_api_process_validates_configs_without_loading_torch(service):
    with service.client() as client:
        assert client.post("/jobs", json={"config": tiny_train_config("light")}).status_code == 201
        bad = client.post("/jobs", json={"config": {**tiny_train_config("heavy"),
                                                    "model": {"family": "se", "backbone": "resnet18_small",
                                                              "placement": "res9"}}})
    assert bad.status_code == 422 and "model.placement" in bad.json()["message"]
    mapped = Path(f"/proc/{service.process.pid}/maps").read_text()
    assert "libtorch" not in mapped and "libc10" not in mapped
