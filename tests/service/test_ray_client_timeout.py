"""The Ray Jobs runner puts a timeout on every request through the SDK's private
`JobSubmissionClient._do_request`: guard that hook against a real (tiny) HTTP server that stalls, and
check the fallback to the plain client when a Ray upgrade changes it."""

from __future__ import annotations

import inspect
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ray.dashboard.modules.dashboard_sdk import SubmissionClient
from ray.job_submission import JobSubmissionClient

from service.runners import RunnerState
from service.runners.ray_jobs import RayJobsRunner, _make_client
from service.settings import Settings


@pytest.fixture
def stalling_head():
    """Answers the version check like a Ray 2.60 head; every job request stalls until the test ends."""
    release = threading.Event()

    class Head(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/api/version":
                body = json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "guard"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            release.wait(60)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


def poll_in_thread(runner: RayJobsRunner, handle: str) -> list:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(runner.poll(handle)), daemon=True)
    thread.start()
    thread.join(30)  # a hang detector only: with the timeout the poll ends in about a second
    assert not thread.is_alive(), "poll hung on a stalled head: the request timeout did not reach requests"
    return answers


def test_the_private_request_hook_still_forwards_keywords():
    parameters = inspect.signature(SubmissionClient._do_request).parameters
    assert list(parameters)[:3] == ["self", "method", "endpoint"]
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def test_a_stalled_head_times_out_instead_of_hanging_the_supervisor(stalling_head, tmp_path):
    settings = Settings(home=tmp_path, ray_address=stalling_head, mlflow_ui=False)
    runner = RayJobsRunner(settings, request_timeout=0.5, unreachable_grace=0)
    assert poll_in_thread(runner, "attnlab-1-1") == [RunnerState.LOST]  # unreachable past the grace
    patient = RayJobsRunner(settings, request_timeout=0.5, unreachable_grace=300)
    assert poll_in_thread(patient, "attnlab-1-1") == [RunnerState.RUNNING]  # within the grace: still running


def test_without_the_hook_the_runner_falls_back_to_the_plain_client(stalling_head, monkeypatch, caplog):
    original = SubmissionClient._do_request

    def without_keywords(self, method, endpoint, *, data=None, json_data=None):
        return original(self, method, endpoint, data=data, json_data=json_data)

    monkeypatch.setattr(SubmissionClient, "_do_request", without_keywords)
    client = _make_client(stalling_head, None, request_timeout=0.5)
    assert type(client) is JobSubmissionClient  # still talks to the head (the version check passed)
    assert "go without a timeout" in caplog.text
