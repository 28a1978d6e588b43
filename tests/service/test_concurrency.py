"""Many clients at once: every submission is stored exactly once (queue only, nothing trains)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.service.conftest import TOKEN, tiny_train_config

pytestmark = pytest.mark.slow  # a real `attnlab serve` subprocess under load

CLIENTS = 20
PER_CLIENT = 10


def test_200_submissions_from_20_clients_are_200_distinct_jobs(start_service):
    service = start_service(slots=0)

    def submit_many(client_number: int) -> list[int]:
        ids = []
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            for index in range(PER_CLIENT):
                config = tiny_train_config(f"load-{client_number}-{index}")
                response = client.post("/jobs", json={"config": config,
                                                      "idempotency_key": f"{client_number}-{index}"})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
        return ids

    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = [job_id for batch in pool.map(submit_many, range(CLIENTS)) for job_id in batch]
    assert len(ids) == len(set(ids)) == CLIENTS * PER_CLIENT

    with service.client() as client:
        listed = client.get("/jobs", params={"limit": 500}).json()
        page = client.get("/jobs", params={"limit": 50, "offset": 50, "state": "QUEUED", "kind": "train"}).json()
        named = client.get("/jobs", params={"name": "load-7-"}).json()
    assert listed["total"] == CLIENTS * PER_CLIENT
    assert sorted(item["id"] for item in listed["items"]) == sorted(ids)
    assert len(page["items"]) == 50 and page["total"] == CLIENTS * PER_CLIENT
    assert sorted(item["name"] for item in named["items"]) == sorted(f"load-7-{i}" for i in range(PER_CLIENT))


def test_one_idempotency_key_from_20_clients_at_once_makes_one_job(start_service):
    service = start_service(slots=0)
    body = {"config": tiny_train_config("same-key"), "idempotency_key": "race"}

    def submit(_: int) -> tuple[int, int]:
        response = httpx.post(f"{service.url}/jobs", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=60)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(submit, range(CLIENTS)))
    assert len({job_id for _, job_id in results}) == 1
    assert sorted(code for code, _ in results) == [200] * (CLIENTS - 1) + [201]
