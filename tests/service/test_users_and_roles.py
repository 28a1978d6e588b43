"""Users, roles, ownership, the queue bound and the audit log, over real HTTP on a queue-only service.

The service token is the bootstrap admin's; the admin creates alice and bob (role user) and vera
(viewer). Every rule is checked from the outside: a user cannot read or cancel another's job, a
viewer reads everything and changes nothing, a revoked token is refused, a user's queue is bounded,
and every mutating action (and every refusal) lands in the admin's audit log.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
import yaml

from tests.service.conftest import TOKEN, launch_service, tiny_train_config

pytestmark = pytest.mark.slow
QUEUE_LIMIT = 3


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    home = tmp_path_factory.mktemp("users-home")
    (home / "data").mkdir()
    service = launch_service(home, home / "data", slots=0, max_queued_per_user=QUEUE_LIMIT)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tokens(service) -> dict[str, str]:
    made = {"admin": TOKEN}
    with service.client() as admin:
        for name, role in (("alice", "user"), ("bob", "user"), ("vera", "viewer")):
            response = admin.post("/users", json={"name": name, "role": role})
            assert response.status_code == 201, response.text
            assert response.json()["role"] == role and response.json()["token"].startswith("atl_")
            made[name] = response.json()["token"]
    return made


def as_user(service, tokens, name):
    return service.client(token=tokens[name])


def new_user(service, name: str, role: str = "user") -> str:
    """A fresh user's token (each test below its own, so earlier tests' queued jobs do not count)."""
    with service.client() as admin:
        made = admin.post("/users", json={"name": name, "role": role})
    assert made.status_code == 201, made.text
    return made.json()["token"]


def submit(client, name: str, **extra):
    return client.post("/jobs", json={"config": tiny_train_config(name), **extra})


def test_tokens_are_stored_as_digests_only(service, tokens):
    with sqlite3.connect(service.home / "jobs.db") as db:
        rows = dict(db.execute("SELECT name, token_sha256 FROM users").fetchall())
        dump = "\n".join(db.iterdump())
    assert rows["alice"] == hashlib.sha256(tokens["alice"].encode()).hexdigest()
    assert all(tokens[name] not in dump for name in ("alice", "bob", "vera"))
    with service.client() as admin:
        listed = admin.get("/users").json()
    assert [user["name"] for user in listed] == ["alice", "bob", "vera"] and "token" not in listed[0]


def test_a_user_cannot_read_or_cancel_another_users_job(service, tokens):
    with as_user(service, tokens, "alice") as alice, as_user(service, tokens, "bob") as bob:
        job = submit(alice, "alice-private").json()
        assert job["owner"] == "alice"
        for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/logs"):
            refused = bob.get(path)
            assert refused.status_code == 403 and "belongs to another user" in refused.json()["message"]
        assert job["id"] not in [item["id"] for item in bob.get("/jobs").json()["items"]]
        assert bob.get("/jobs", params={"owner": "alice"}).status_code == 403
        cancel = bob.post(f"/jobs/{job['id']}/cancel")
        assert cancel.status_code == 403 and "users cancel only their own jobs" in cancel.json()["message"]
        assert alice.get(f"/jobs/{job['id']}").json()["state"] == "QUEUED"
        assert alice.post(f"/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"


def test_admins_read_and_cancel_any_job(service, tokens):
    with as_user(service, tokens, "bob") as bob, service.client() as admin:
        job = submit(bob, "bob-job").json()
        assert job["id"] in [item["id"] for item in admin.get("/jobs", params={"owner": "bob"}).json()["items"]]
        assert admin.get(f"/jobs/{job['id']}").status_code == 200
        assert admin.post(f"/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"


def test_a_viewer_reads_everything_and_changes_nothing(service, tokens):
    with as_user(service, tokens, "alice") as alice, as_user(service, tokens, "vera") as vera:
        job = submit(alice, "seen-by-vera").json()
        assert vera.get(f"/jobs/{job['id']}").json()["owner"] == "alice"
        assert vera.get("/jobs", params={"owner": "alice"}).json()["total"] >= 1
        refused = submit(vera, "vera-job")
        assert refused.status_code == 403 and "role 'viewer' can only read" in refused.json()["message"]
        assert vera.post(f"/jobs/{job['id']}/cancel").status_code == 403
        assert vera.put("/models/any/aliases/champion", json={"version": "1"}).status_code == 403
        assert vera.post("/users", json={"name": "mallory", "role": "admin"}).status_code == 403
        assert vera.get("/users/me").json() == {"name": "vera", "role": "viewer"}


def test_a_revoked_token_is_refused_and_a_new_one_works(service, tokens):
    with service.client() as admin:
        made = admin.post("/users", json={"name": "carol"}).json()
        with service.client(token=made["token"]) as carol:
            assert carol.get("/jobs").status_code == 200
            assert admin.post("/users/carol/revoke").json()["revoked_at"] is not None
            refused = carol.get("/jobs")
            assert refused.status_code == 401 and "revoked" in refused.json()["message"]
            assert submit(carol, "after-revoke").status_code == 401
        renewed = admin.post("/users/carol/token").json()["token"]
        with service.client(token=made["token"]) as old, service.client(token=renewed) as new:
            assert old.get("/jobs").status_code == 401
            assert new.get("/users/me").json() == {"name": "carol", "role": "user"}
    with service.client(token="atl_not-a-token") as stranger:
        assert stranger.get("/jobs").status_code == 401


def test_a_users_queued_jobs_are_bounded_but_an_admins_are_not(service, tokens):
    with service.client() as admin:
        admin.post("/users", json={"name": "dave"})
        dave_token = admin.post("/users/dave/token").json()["token"]
        with service.client(token=dave_token) as dave:
            accepted = [submit(dave, f"dave-{index}").status_code for index in range(QUEUE_LIMIT)]
            flooded = submit(dave, "dave-too-many")
            assert accepted == [201] * QUEUE_LIMIT
            assert flooded.status_code == 429 and f"dave already has {QUEUE_LIMIT} queued jobs" in flooded.text
            first = dave.get("/jobs", params={"name": "dave-0"}).json()["items"][0]["id"]
            dave.post(f"/jobs/{first}/cancel")
            assert submit(dave, "dave-after-cancel").status_code == 201
        assert [submit(admin, f"admin-{index}").status_code for index in range(QUEUE_LIMIT + 1)] == [201] * 4
        refusals = admin.get("/audit", params={"actor": "dave", "action": "train.submit"}).json()["items"]
    assert [(entry["target"], entry["outcome"]) for entry in refusals if entry["outcome"] == "denied"] == [
        ("train dave-too-many", "denied")]


def test_an_idempotency_key_never_returns_another_users_job(service, tokens):
    with as_user(service, tokens, "alice") as alice, as_user(service, tokens, "bob") as bob:
        first = submit(alice, "keyed", idempotency_key="shared-key")
        assert first.status_code == 201
        assert submit(alice, "keyed", idempotency_key="shared-key").json()["id"] == first.json()["id"]
        stolen = submit(bob, "keyed", idempotency_key="shared-key")
        assert stolen.status_code == 409 and "another submitter" in stolen.json()["message"]


def test_every_mutating_action_is_in_the_admins_audit_log(service, tokens):
    with as_user(service, tokens, "alice") as alice, as_user(service, tokens, "bob") as bob:
        job = submit(alice, "audited").json()
        bob.post(f"/jobs/{job['id']}/cancel")
        alice.post(f"/jobs/{job['id']}/cancel")
        assert alice.get("/audit").status_code == 403
    with service.client() as admin:
        admin.post("/users", json={"name": "erin", "role": "viewer"})
        admin.post("/users/erin/revoke")
        entries = admin.get("/audit", params={"limit": 1000}).json()["items"]
    seen = {(entry["actor"], entry["action"], entry["target"], entry["outcome"]) for entry in entries}
    assert ("admin", "user.create", "user alice", "ok") in seen
    assert ("alice", "train.submit", f"job {job['id']}", "ok") in seen
    assert ("bob", "job.cancel", f"job {job['id']}", "denied") in seen
    assert ("alice", "job.cancel", f"job {job['id']}", "ok") in seen
    assert ("alice", "admin", "service", "denied") in seen
    assert ("admin", "user.create", "user erin", "ok") in seen and ("admin", "user.revoke", "user erin", "ok") in seen
    assert all(entry["at"] for entry in entries)


def test_a_searchs_trials_are_read_as_its_job_is(service, tokens):
    search = {**tiny_train_config("fay-search"), "search": {
        "space": {"model.reduction": {"grid": [2, 4]}}, "algorithm": "grid", "scheduler": {"kind": "fifo"}}}
    with service.client(token=new_user(service, "fay")) as fay, as_user(service, tokens, "bob") as bob, \
            as_user(service, tokens, "vera") as vera, service.client(token=None) as anonymous:
        job = fay.post("/searches", json={"config": search}).json()
        path = f"/jobs/{job['id']}/trials"
        assert anonymous.get(path).status_code == 401
        refused = bob.get(path)  # someone else's search: refused before anything about it is said
        assert refused.status_code == 403 and "belongs to another user" in refused.json()["message"]
        for reader in (fay, vera):  # its owner and a viewer get as far as "not started" (nothing trains here)
            answer = reader.get(path)
            assert answer.status_code == 409 and "has no MLflow run yet" in answer.json()["message"]
        fay.post(f"/jobs/{job['id']}/cancel")


def test_the_web_page_shows_each_token_what_the_api_lets_it(service, tokens):
    with service.client(token=new_user(service, "gail")) as gail, as_user(service, tokens, "bob") as bob, \
            as_user(service, tokens, "vera") as vera, service.client() as admin, \
            service.client(token=None) as anonymous:
        job = submit(gail, "gail-on-the-page").json()
        shell = anonymous.get("/")  # a navigation carries no token: the shell, which asks for one
        assert shell.status_code == 200 and 'data-needs-token="true"' in shell.text
        assert "gail-on-the-page" not in shell.text and anonymous.get("/ui/jobs").status_code == 401
        assert "gail-on-the-page" in gail.get("/ui/jobs").text and "gail-on-the-page" in vera.get("/ui/jobs").text
        assert "gail-on-the-page" not in bob.get("/ui/jobs").text
        refused = bob.get(f"/ui/jobs/{job['id']}")
        assert refused.status_code == 403 and "belongs to another user" in refused.text
        own, viewed, administered = (client.get(f"/ui/jobs/{job['id']}").text for client in (gail, vera, admin))
        assert "gail-on-the-page" in viewed and "<dd>gail</dd>" in viewed  # the owner fact
        # Cancel is offered only to whoever may cancel: its owner and admins, never a viewer.
        assert "data-cancel=" in own and "data-cancel=" in administered and "data-cancel=" not in viewed
        gail.post(f"/jobs/{job['id']}/cancel")


def test_cancelling_anothers_finished_job_is_403_and_ones_own_a_409(service, tokens):
    with service.client(token=new_user(service, "hal")) as hal, as_user(service, tokens, "bob") as bob, \
            as_user(service, tokens, "vera") as vera, service.client() as admin:
        job = submit(hal, "hal-finished").json()
        assert hal.post(f"/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"
        foreign, viewer = bob.post(f"/jobs/{job['id']}/cancel"), vera.post(f"/jobs/{job['id']}/cancel")
        assert foreign.status_code == 403 and "belongs to another user" in foreign.json()["message"]
        assert viewer.status_code == 403 and "can only read" in viewer.json()["message"]
        for client in (hal, admin):
            again = client.post(f"/jobs/{job['id']}/cancel")
            assert again.status_code == 409 and "already ended CANCELLED" in again.json()["message"]
        entries = admin.get("/audit", params={"action": "job.cancel", "limit": 1000}).json()["items"]
    seen = [(entry["actor"], entry["outcome"]) for entry in entries if entry["target"] == f"job {job['id']}"]
    assert sorted(seen) == [("admin", "denied"), ("bob", "denied"), ("hal", "denied"), ("hal", "ok")]


def test_yaml_submissions_and_data_checks_are_audited_as_their_submitters(service, tokens):
    check = {"name": "clips", "data": {"kind": "video", "dataset": "folder", "root": "clips"},
             "model": {"family": "none", "backbone": "c2d_resnet_tiny"}}
    text = yaml.safe_dump(tiny_train_config("ida-yaml"), sort_keys=False)
    with service.client(token=new_user(service, "ida")) as ida, \
            service.client(token=new_user(service, "vic", "viewer")) as vic:
        posted = ida.post("/jobs", content=text, headers={"content-type": "application/yaml"})
        checked = ida.post("/data-checks", json={"config": check})
        assert (posted.status_code, checked.status_code) == (201, 201), checked.text
        assert posted.json()["owner"] == checked.json()["owner"] == "ida"
        refused = vic.post("/jobs", content=text, headers={"content-type": "application/yaml"})
        assert refused.status_code == 403 and vic.post("/data-checks", json={"config": check}).status_code == 403
        for job in (posted.json(), checked.json()):
            ida.post(f"/jobs/{job['id']}/cancel")
    with service.client() as admin:
        ida_entries = admin.get("/audit", params={"actor": "ida", "limit": 1000}).json()["items"]
        vic_entries = admin.get("/audit", params={"actor": "vic", "limit": 1000}).json()["items"]
    seen = {(entry["action"], entry["target"], entry["outcome"]) for entry in ida_entries}
    assert ("train.submit", f"job {posted.json()['id']}", "ok") in seen
    assert ("data_check.submit", f"job {checked.json()['id']}", "ok") in seen
    assert [(entry["action"], entry["outcome"]) for entry in vic_entries] == [("write", "denied")] * 2
