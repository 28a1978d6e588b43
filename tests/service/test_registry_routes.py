"""Registry routes in process, with the MLflow reader swapped through app.dependency_overrides."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.deps import get_tracking
from service.settings import Settings
from service.tracking import ModelView, NotFound, VersionView

HEADERS = {"Authorization": "Bearer t"}


class FakeRegistry:
    """Two versions of one model; set_alias behaves like TrackingReader's."""

    def __init__(self):
        self.aliases = {"candidate": "2"}

    def _model(self) -> ModelView:
        versions = [VersionView(version=v, run_id=f"run{v}", status="READY", created=1,
                                aliases=sorted(a for a, target in self.aliases.items() if target == v),
                                metrics={"test/acc": 0.5 + int(v) / 10, "test/loss": float("nan") if v == "1" else 1.0})
                    for v in ("2", "1")]
        return ModelView(name="se-tiny", description=None, aliases=dict(self.aliases), latest_versions=["2"],
                         versions=versions)

    def models(self, prefix, limit):
        return [self._model()] if not prefix or "se-tiny".startswith(prefix) else []

    def model(self, name):
        if name != "se-tiny":
            raise NotFound(f"no registered model named {name!r}")
        return self._model()

    def set_alias(self, name, alias, version):
        if version not in ("1", "2"):
            raise NotFound(f"model {name!r} has no version {version!r} (versions: 2, 1)")
        self.aliases[alias] = version
        return self.model(name)


@pytest.fixture
def client(attnlab_home):
    app = create_app(Settings(home=attnlab_home, slots=0, mlflow_ui=False, token="t"))
    registry = FakeRegistry()
    app.dependency_overrides[get_tracking] = lambda: registry
    with TestClient(app, headers=HEADERS) as client:  # reads need the token too
        yield client


def test_model_versions_list_metrics_and_aliases(client):
    assert [m["name"] for m in client.get("/models", params={"prefix": "se"}).json()] == ["se-tiny"]
    assert client.get("/models", params={"prefix": "nl"}).json() == []
    model = client.get("/models/se-tiny").json()
    assert [v["version"] for v in model["versions"]] == ["2", "1"]
    assert model["versions"][0]["aliases"] == ["candidate"]
    assert model["versions"][1]["metrics"] == {"test/acc": 0.6, "test/loss": None}


def test_promote_points_an_alias_at_a_version(client):
    promoted = client.put("/models/se-tiny/aliases/champion", json={"version": "1"}, headers=HEADERS)
    assert promoted.status_code == 200
    assert promoted.json()["aliases"] == {"candidate": "2", "champion": "1"}


@pytest.mark.parametrize("path, body, status, message", [
    ("/models/se-tiny/aliases/champion", {"version": "9"}, 404, "has no version '9'"),
    ("/models/nope/aliases/champion", {"version": "1"}, 404, "no registered model named 'nope'"),
    ("/models/se-tiny/aliases/latest", {"version": "1"}, 422, "reserved by MLflow"),
    ("/models/se-tiny/aliases/v3", {"version": "1"}, 422, "reserved by MLflow"),
    ("/models/se-tiny/aliases/bad alias", {"version": "1"}, 422, "path.alias"),
    ("/models/se-tiny/aliases/champion", {"version": "one"}, 422, "version"),
])
def test_promote_errors_name_what_was_wrong(client, path, body, status, message):
    response = client.put(path, json=body, headers=HEADERS)
    assert response.status_code == status
    assert message in response.json()["message"]
