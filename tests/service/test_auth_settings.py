"""The zero-configuration admin token, open reads, the MLflow UI's bind address, and old job tables."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.mlflow_ui import MlflowUI
from service.settings import Settings
from service.store import JobKind, JobStore


@pytest.fixture
def app_for(attnlab_home):
    def make(**settings):
        return TestClient(create_app(Settings(home=attnlab_home, slots=0, mlflow_ui=False, **settings)))

    return make


def test_the_generated_token_file_is_the_admin_token(app_for, attnlab_home):
    with app_for() as client:
        token = (attnlab_home / "token").read_text().strip()
        assert (attnlab_home / "token").stat().st_mode & 0o777 == 0o600
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/users/me", headers=headers).json() == {"name": "admin", "role": "admin"}
        made = client.post("/users", json={"name": "alice"}, headers=headers)
        assert made.status_code == 201 and made.json()["created_by"] == "admin"
        assert client.get("/jobs").status_code == 401


def test_open_reads_answer_without_a_token_but_writes_still_need_one(app_for):
    with app_for(open_reads=True, token="t") as client:
        assert client.get("/jobs").status_code == 200
        assert client.get("/users/me").json() == {"name": "anonymous", "role": "viewer"}
        refused = client.post("/jobs/1/cancel")
        assert refused.status_code == 401 and "missing bearer token" in refused.json()["message"]
        assert client.get("/audit").status_code == 401


def test_the_mlflow_ui_listens_on_loopback_unless_told_otherwise(attnlab_home):
    exposed_api = MlflowUI(Settings(home=attnlab_home, host="0.0.0.0", mlflow_ui_port=0))
    command = exposed_api.command()
    assert command[command.index("--host") + 1] == "127.0.0.1" and exposed_api.exposure_warning() is None
    widened = MlflowUI(Settings(home=attnlab_home, mlflow_ui_host="0.0.0.0", mlflow_ui_port=0))
    command = widened.command()
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert "without authentication" in widened.exposure_warning() and widened.url.startswith("http://127.0.0.1:")


def test_a_job_table_from_before_owners_gains_the_column_and_its_jobs_are_the_admins(attnlab_home):
    path = attnlab_home / "jobs.db"
    store = JobStore(f"sqlite:///{path}")
    store.submit(JobKind.TRAIN, "old", {"name": "old"})
    store.close()
    with sqlite3.connect(path) as db:  # the table as it was before owners were recorded
        db.execute("DROP INDEX ix_jobs_owner_state")
        db.execute("ALTER TABLE jobs DROP COLUMN owner")
    store = JobStore(f"sqlite:///{path}")
    try:
        (job,) = store.list().items
        assert job.name == "old" and job.owner == "admin"
        assert store.submit(JobKind.TRAIN, "new", {"name": "new"}, owner="alice")[0].owner == "alice"
        assert [j.name for j in store.list(owner="alice").items] == ["new"]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert "ix_jobs_owner_state" in {row[1] for row in db.execute("PRAGMA index_list(jobs)")}
