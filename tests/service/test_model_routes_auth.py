"""The model card and evaluation routes follow the service's roles, in process on a real (empty) MLflow store.

Reads need a token (or ATTNLAB_OPEN_READS); submitting an evaluation needs a writer's token, and a
viewer is refused with a 403 before the model is even looked up, the refusal landing in the audit log.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.users import Role

ADMIN = {"Authorization": "Bearer t"}
CARD = "/models/nothing-here/versions/1/card"
EVALUATION = {"config": {"model": "models:/nothing-here/1",
                         "data": {"kind": "image", "dataset": "fashion_mnist", "root": "tiny", "batch_size": 8}}}


@pytest.fixture
def app_for(attnlab_home):
    def make(**settings):
        return TestClient(create_app(Settings(home=attnlab_home, slots=0, mlflow_ui=False, token="t", **settings)))

    return make


def bearer(client: TestClient, name: str, role: Role) -> dict[str, str]:
    made = client.post("/users", json={"name": name, "role": role.value}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['token']}"}


def test_a_model_card_needs_a_token_unless_reads_are_open(app_for):
    with app_for() as client:
        refused = client.get(CARD)
        assert refused.status_code == 401 and "missing bearer token" in refused.json()["message"]
        viewer = bearer(client, "vera", Role.VIEWER)
        missing = client.get(CARD, headers=viewer)  # past the token check, to the registry
        assert missing.status_code == 404 and "nothing-here" in missing.json()["message"]
    with app_for(open_reads=True) as client:
        assert client.get(CARD).status_code == 404


def test_a_viewer_cannot_submit_an_evaluation_and_the_refusal_is_audited(app_for):
    with app_for() as client:
        viewer, user = bearer(client, "vera", Role.VIEWER), bearer(client, "alice", Role.USER)
        assert client.post("/evaluations", json=EVALUATION).status_code == 401
        refused = client.post("/evaluations", json=EVALUATION, headers=viewer)
        # 403 before anything about the model is said: the viewer is refused, not told it is missing.
        assert refused.status_code == 403 and "role 'viewer' can only read" in refused.json()["message"]
        checked = client.post("/evaluations", json=EVALUATION, headers=user)
        assert checked.status_code == 422 and checked.json()["message"].startswith("config.model: ")
        entries = client.get("/audit", params={"actor": "vera"}, headers=ADMIN).json()["items"]
    assert [(entry["action"], entry["target"], entry["outcome"]) for entry in entries] == [
        ("write", "service", "denied")]
