"""The web page in a real headless Chromium: sign in, submit (errors at their line), follow, cancel; a phone;
what a viewer and another user are offered.

One `attnlab serve` (MLflow UI on, so the page links into it) on synthetic Fashion-MNIST-format data; reads
need a token, and the admin makes alice and bob (users) and vera (a viewer).
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from service.web.headless import Browser
from tests.service.conftest import TOKEN, launch_service, tiny_train_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from datamodules.synthetic import write_idx_dataset

    home = tmp_path_factory.mktemp("web-home")
    write_idx_dataset(home / "data" / "tiny-fmnist", train=256, test=16)
    started = launch_service(home, home / "data", mlflow_ui="true")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tokens(service) -> dict[str, str]:
    made = {"admin": TOKEN}
    with service.client() as admin:
        for name, role in (("alice", "user"), ("bob", "user"), ("vera", "viewer")):
            made[name] = admin.post("/users", json={"name": name, "role": role}).raise_for_status().json()["token"]
    return made


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(log_path=tmp_path_factory.mktemp("chromium") / "chromium.log") as opened:
        yield opened


def js(value) -> str:
    return json.dumps(value)


def row_state(page, job_id: int) -> str:
    return page.evaluate(f"(document.querySelector('.job-row[data-job=\"{job_id}\"] .state') || {{}}).textContent || ''")


def sign_in(page, token: str, who: str) -> None:
    page.type("#token", token)
    page.click("#signin button")
    page.wait_for(f"document.querySelector('#who').textContent === {js(who)}", what=f"signed in as {who}")


def test_submit_follow_and_cancel_a_training_job(service, browser, tokens, tmp_path):
    page = browser.page(1400, 900)
    page.call("Network.enable")
    page.goto(service.url + "/")  # reads need a token: the shell asks for one
    assert "Sign in with your token" in page.text("#jobs") and page.evaluate("!document.querySelector('#signin').hidden")

    # A config with a mistake: the error is listed with its field and line, and that line is marked.
    bad = yaml.safe_dump(tiny_train_config("web-bad", data="tiny-fmnist"), sort_keys=False).replace(
        "family: se", "family: squeeze")
    bad_line = 1 + bad.splitlines().index("  family: squeeze")
    page.click("#open-submit")
    page.wait_for("document.querySelector('#submit').open")
    assert page.evaluate("!document.querySelector('#submit-token-row').hidden"), "asks for the token first"
    page.type("#submit-token", tokens["alice"])  # any user's own token signs in
    page.type("#config", bad)
    page.click("#submit-button")
    errors = page.wait_for("document.querySelector('#errors').innerText", what="the validation errors")
    assert "model.family" in errors and f"line {bad_line}" in errors and "'nonlocal', 'se'" in errors
    assert page.evaluate(f"[...document.querySelectorAll('#gutter .bad')].map(e => e.textContent)") == [str(bad_line)]
    assert page.evaluate("document.querySelector('#backdrop mark').textContent").strip() == "family: squeeze"
    assert page.evaluate("!document.querySelector('#signed').hidden"), "the dialog's token signed the user in"
    assert page.evaluate(f"sessionStorage.getItem('attnlab.token')") == tokens["alice"]
    page.wait_for("document.querySelector('#who').textContent === 'alice (user)'", what="who signed in")
    assert page.evaluate("localStorage.length") == 0, "the token is kept for the browser session only"

    # The corrected config, chosen as a file: long enough to be followed and cancelled.
    config = tiny_train_config("web-run", data="tiny-fmnist", max_steps=400)
    config["trainer"]["checkpoint_every_n_steps"] = 50
    path = tmp_path / "web-run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    page.upload("#config-file", path)
    page.wait_for(f"document.querySelector('#config').value === {js(path.read_text())}", what="the file's text")
    page.click("#submit-button")
    page.wait_for("!document.querySelector('#submit').open", what="the dialog to close")
    assert page.wait_for("document.querySelector('#detail-info .job-name')?.textContent") == "web-run"
    job_id = int(page.evaluate("document.querySelector('#detail-info article').dataset.job"))

    # Follow: the state, the step counter and the live log move while it trains.
    page.wait_for("document.querySelector('#detail-info [data-role=state]')?.textContent === 'RUNNING'",
                  timeout=120, what="RUNNING")
    progress = page.wait_for("(t => /step \\d+\\/400/.test(t) && t)(document.querySelector("
                             "'#detail-info [data-role=progress]').textContent)", timeout=180, what="a step count")
    assert "epoch 1/1" in progress
    page.wait_for("document.querySelector('#log').textContent.includes('attempt 1 starting')", what="the log")
    page.wait_for("document.querySelector('#detail-info [data-role=metrics]')?.textContent.includes('train/loss')",
                  timeout=120, what="the latest metrics")
    assert row_state(page, job_id) == "RUNNING"
    page.wait_for(f"/step \\d+/.test(document.querySelector('.job-row[data-job=\"{job_id}\"] .c-progress').textContent)",
                  what="the table's live progress")
    with service.client() as client:
        ui = client.get("/health").json()["mlflow_ui"]
        run_id = client.get(f"/jobs/{job_id}").json()["mlflow_run_id"]
    page.wait_for("document.querySelector('#detail-info a[data-link=run]')", what="the MLflow link")
    assert page.evaluate("document.querySelector('#detail-info a[data-link=run]').href") == f"{ui}/#/runs/{run_id}"

    # Cancel (a second click confirms): the page shows it cancelled; MLflow marks the run KILLED.
    page.click("#detail-info [data-cancel]")
    assert page.text("#detail-info [data-cancel]") == "Confirm cancel"
    page.click("#detail-info [data-cancel]")
    page.wait_for("document.querySelector('#detail-info [data-role=state]')?.textContent === 'CANCELLED'",
                  timeout=60, what="CANCELLED")
    page.wait_for(f"document.querySelector('.job-row[data-job=\"{job_id}\"] .state')?.textContent === 'CANCELLED'",
                  what="the table to show it cancelled")
    page.wait_for("document.querySelector('#log').textContent.includes('cancelled')", what="the log's last line")
    assert not page.evaluate("document.querySelector('#detail-info [data-cancel]')"), "no cancel for a finished job"
    deadline = time.monotonic() + 90
    with service.client() as client:
        while client.get(f"/jobs/{job_id}").json()["mlflow_status"] != "KILLED":
            assert time.monotonic() < deadline, "the cancelled job's MLflow run was not marked KILLED"
            time.sleep(1)
    page.click(f".job-row[data-job='{job_id}'] .c-id")
    page.wait_for("document.querySelector('#detail-info .facts').innerText.includes('KILLED')",
                  what="MLflow status KILLED on the page")

    # Everything the page loaded came from the service itself.
    requested = {event["params"]["request"]["url"] for event in browser._events
                 if event.get("method") == "Network.requestWillBeSent" and event.get("sessionId") == page.session}
    assert requested and all(url.startswith(service.url) or url.startswith("data:") for url in requested), requested


def test_a_viewer_reads_everyones_jobs_but_is_offered_no_changes_and_a_user_only_its_own(service, browser, tokens):
    with service.client(token=tokens["alice"]) as alice:
        job_id = alice.post("/jobs", json={"config": tiny_train_config("alice-long", data="tiny-fmnist",
                                                                       max_steps=400)}).raise_for_status().json()["id"]
    page = browser.page(1400, 900)
    page.goto(service.url + "/")
    sign_in(page, tokens["vera"], "vera (viewer)")
    assert page.evaluate("document.querySelector('#open-submit').offsetWidth") == 0, "no Submit for a viewer"
    page.wait_for(f"document.querySelector('.job-row[data-job=\"{job_id}\"]')", what="alice's job in vera's list")
    page.click(f".job-row[data-job='{job_id}'] .c-id")
    page.wait_for(f"document.querySelector('#detail-info article')?.dataset.job === '{job_id}'", what="alice's job")
    shown = page.evaluate("[document.querySelector('#detail-info article').dataset.finished, "
                          "Boolean(document.querySelector('#detail-info [data-cancel]')), "
                          "document.querySelector('#detail-info .facts').innerText]")
    assert shown[0] == "false" and not shown[1], "a running job, and no Cancel for a viewer"
    assert "alice" in shown[2], "the detail names the owner"

    # bob (a user) sees his own jobs only, and alice's job is refused in words.
    page.click("#signout")
    sign_in(page, tokens["bob"], "bob (user)")
    assert page.evaluate("document.querySelector('#open-submit').offsetWidth") > 0
    page.wait_for("document.querySelector('#jobs').textContent.includes('No jobs yet')", what="bob's empty list")
    page.goto(f"{service.url}/?job={job_id}")
    problem = page.wait_for("document.querySelector('#detail-info [data-problem]')?.textContent", what="a refusal")
    assert "belongs to another user" in problem
    with service.client(token=tokens["alice"]) as alice:
        alice.post(f"/jobs/{job_id}/cancel").raise_for_status()


def test_the_page_fits_a_phone_and_shows_one_job_at_a_time(service, browser):
    with service.client() as client:  # a long name must wrap, not widen the table
        client.post("/jobs", json={"config": tiny_train_config("se-placement-x-reduction-ablation-of-stage-four",
                                                               data="tiny-fmnist")}).raise_for_status()
    page = browser.page(390, 844, mobile=True)
    page.goto(service.url + "/")
    sign_in(page, TOKEN, "admin (admin)")
    page.wait_for("document.querySelector('.job-row')", what="a job row")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing scrolls sideways"
    visible = page.evaluate("[...document.querySelectorAll('.jobs-head [role=columnheader]')].filter(e => e.offsetWidth)"
                            ".map(e => e.textContent)")
    assert {"Name", "State", "Progress"} <= set(visible)
    page.click(".job-row .c-name a")
    page.wait_for("document.querySelector('#detail-info article')", what="the job")
    assert page.evaluate("document.querySelector('.list').offsetHeight") == 0, "the list steps aside"
    assert page.evaluate("document.querySelector('[data-back]').offsetWidth") > 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.click("[data-back]")
    page.wait_for("document.querySelector('.list').offsetHeight > 0", what="the list again")
    # The submit dialog works at this width too; signed out, the service says why it refuses.
    page.click("#signout")
    page.click("#open-submit")
    page.type("#config", yaml.safe_dump(tiny_train_config("phone", data="tiny-fmnist")))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.click("#submit-button")
    errors = page.wait_for("document.querySelector('#errors').innerText", what="the answer")
    assert "needs your token" in errors
    assert page.evaluate("!document.querySelector('#submit-token-row').hidden")
