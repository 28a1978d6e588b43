"""Over real HTTP on a queue-only service: the rough edges a new user hit (issue 17), each pinned down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.service.conftest import TOKEN, tiny_train_config

pytestmark = pytest.mark.slow  # a real `attnlab serve` subprocess


@pytest.fixture
def service(queue_service):
    return queue_service


def _submit(client, config: dict) -> dict:
    response = client.post("/jobs", json={"config": config})
    assert response.status_code == 201, response.text
    return response.json()


def test_log_offsets_past_the_end_read_nothing_and_tail_starts_at_a_line(service):
    with service.client() as client:
        job = _submit(client, tiny_train_config("logs"))
        log = service.home / "jobs" / str(job["id"]) / "job.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"first line\nsecond line\nthird line\n")
        for offset in (2**45, 2**50, 2**62):  # the file system's largest offset is 2^44 on ext4
            response = client.get(f"/jobs/{job['id']}/logs", params={"offset": offset})
            assert response.status_code == 200 and response.content == b""
        assert client.get(f"/jobs/{job['id']}/logs", params={"offset": 11}).content == b"second line\nthird line\n"
        assert client.get(f"/jobs/{job['id']}/logs", params={"tail": 15}).content == b"third line\n"
        assert client.get(f"/jobs/{job['id']}/logs", params={"tail": 1000}).content.startswith(b"first line")


def test_data_kind_may_be_left_out_as_the_schema_documents(service):
    config = tiny_train_config("no-kind")
    del config["data"]["kind"]
    with service.client() as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        job = _submit(client, config)
        stored = client.get(f"/jobs/{job['id']}").json()["config"]
        audio = client.post("/jobs", json={"config": {**config, "data": {"kind": "audio"}}})
    assert "kind" not in schemas["ImageDataConfig"].get("required", [])
    assert "kind" in schemas["VideoDataConfig"]["required"]
    assert stored["data"]["kind"] == "image"
    assert audio.status_code == 422
    assert audio.json()["message"] == "config.data.kind: 'audio' is not one of image, video"


@pytest.mark.parametrize("method, path, documented", [
    ("POST", "/jobs", "/jobs"), ("POST", "/searches", "/searches"),
    ("PUT", "/models/any/aliases/champion", "/models/{name}/aliases/{alias}")])
def test_a_body_that_is_not_utf8_is_a_documented_422_naming_the_body(service, method, path, documented):
    with service.client() as client:
        response = client.request(method, path, content=b'{"config": "\xff\xfe"}',
                                  headers={"content-type": "application/json"})
        schema = client.get("/openapi.json").json()
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("body: not a UTF-8 JSON document")
    assert "422" in schema["paths"][documented][method.lower()]["responses"]


def test_options_and_405_list_every_method_of_the_path(service):
    with service.client() as client:
        options = client.options("/jobs")
        wrong = client.delete("/jobs")
        logs = client.options("/jobs/1/logs")
    assert options.status_code == 204 and options.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert logs.headers["allow"] == "GET, HEAD, OPTIONS"


def test_cancelling_a_finished_job_is_a_conflict_not_a_silent_200(service):
    with service.client() as client:
        job = _submit(client, tiny_train_config("twice"))
        first = client.post(f"/jobs/{job['id']}/cancel")
        second = client.post(f"/jobs/{job['id']}/cancel")
    assert first.status_code == 200 and first.json()["state"] == "CANCELLED"
    assert second.status_code == 409
    assert second.json()["message"] == (f"job {job['id']} already ended CANCELLED; only QUEUED or RUNNING jobs "
                                        "can be cancelled")


def test_a_body_that_is_not_an_object_names_the_body(service):
    with service.client() as client:
        response = client.post("/jobs", json=[1, 2])
    assert response.status_code == 422
    assert response.json()["message"].startswith("body: Input should be a valid dictionary")


def test_yaml_configs_are_taken_as_the_cli_reads_them_and_errors_name_the_line(service):
    text = yaml.safe_dump(tiny_train_config("from-yaml"), sort_keys=False)
    headers = {"content-type": "application/yaml", "idempotency-key": "yaml-1"}
    bad = text.replace("family: se", "family: squeeze")
    with service.client() as client:
        created = client.post("/jobs", content=text, headers=headers)
        again = client.post("/jobs", content=text, headers=headers)
        refused = client.post("/jobs", content=bad, headers={"content-type": "application/yaml"})
        broken = client.post("/jobs", content="name: x\nmodel: [se\n", headers={"content-type": "text/yaml"})
        alias = client.post("/jobs", content="a: &x [1]\nb: *x\n", headers={"content-type": "application/yaml"})
        listed = client.post("/jobs", content="- 1\n- 2\n", headers={"content-type": "application/yaml"})
        documented = client.get("/openapi.json").json()["paths"]["/jobs"]["post"]["requestBody"]["content"]
    assert created.status_code == 201 and created.json()["name"] == "from-yaml"
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    family_line = 1 + bad.splitlines().index("  family: squeeze")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["line"] == family_line
    assert refused.json()["message"].startswith("config.model.family: ")
    assert refused.json()["message"].endswith(f"(line {family_line})")
    assert broken.status_code == 422 and "not valid YAML" in broken.json()["message"]
    assert broken.json()["detail"][0]["line"] == 3
    assert alias.status_code == 422 and "aliases" in alias.json()["message"]
    assert listed.status_code == 422 and "expected a mapping" in listed.json()["message"]
    assert set(documented) == {"application/json", "application/yaml"}


def test_jobs_list_prints_long_names_whole_when_piped(service):
    name = "a-rather-long-run-name-" + "x" * 90
    with service.client() as client:
        _submit(client, tiny_train_config(name))
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env.update(ATTNLAB_URL=service.url, ATTNLAB_TOKEN=TOKEN)
    listed = subprocess.run([sys.executable, "-m", "service.cli", "jobs", "list"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout
