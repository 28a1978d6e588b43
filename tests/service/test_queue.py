"""The job table, the local process runner and the supervisor, in process and without training."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from service.runners.base import JobRunner, RunnerJob, RunnerState
from service.runners.local import LocalProcessRunner, process_start_time
from service.settings import Settings
from service.store import IdempotencyConflict, JobKind, JobState, JobStore
from service.supervisor import Supervisor


class _NoTracking:
    def find_run_id(self, experiment, name):
        return None


@pytest.fixture
def settings(attnlab_home: Path) -> Settings:
    return Settings(home=attnlab_home, slots=1, max_attempts=2, mlflow_ui=False)


@pytest.fixture
def store(settings: Settings) -> JobStore:
    store = JobStore(settings.database_url)
    yield store
    store.close()


def _config(name: str) -> dict:
    return {"name": name, "tracking": {"experiment": "queue"}}


def test_same_idempotency_key_returns_the_first_job_and_another_body_conflicts(store):
    job, created = store.submit(JobKind.TRAIN, "a", _config("a"), "key")
    again, created_again = store.submit(JobKind.TRAIN, "a", _config("a"), "key")
    assert (created, created_again, again.id) == (True, False, job.id)
    with pytest.raises(IdempotencyConflict, match=f"already used for job {job.id}"):
        store.submit(JobKind.TRAIN, "b", _config("b"), "key")


def test_list_filters_by_state_kind_and_name_prefix_newest_first(store):
    ids = [store.submit(JobKind.TRAIN if i % 2 else JobKind.SEARCH, f"run_{i}", _config(f"run_{i}"))[0].id
           for i in range(6)]
    store.finish(ids[1], JobState.CANCELLED)
    assert [job.id for job in store.list().items] == ids[::-1]
    assert [job.id for job in store.list(state=JobState.CANCELLED).items] == [ids[1]]
    assert store.list(kind=JobKind.SEARCH).total == 3
    assert [job.name for job in store.list(name="run_5").items] == ["run_5"]
    assert store.list(name="run%").total == 0  # LIKE wildcards in the prefix are literal
    page = store.list(limit=2, offset=2)
    assert [job.id for job in page.items] == ids[3:1:-1] and page.total == 6


def test_transitions_only_apply_from_the_expected_state(store):
    job, _ = store.submit(JobKind.TRAIN, "t", _config("t"))
    assert store.mark_running(job.id, "test") and not store.mark_running(job.id, "test")
    assert store.finish(job.id, JobState.SUCCEEDED)
    assert not store.finish(job.id, JobState.FAILED)
    assert store.request_cancel(job.id).state == JobState.SUCCEEDED.value


@pytest.fixture
def fake_python(tmp_path: Path):
    """Stands in for the interpreter: the runner calls it as `<python> -m service.cli train --config F`."""

    def make(body: str) -> str:
        script = tmp_path / f"fake-{abs(hash(body))}.sh"
        script.write_text(f"#!/bin/sh\necho started \"$@\"\n{body}\n")
        script.chmod(0o755)
        return str(script)

    return make


def _wait_state(runner: JobRunner, handle: str, state: RunnerState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while runner.poll(handle) is not state:
        assert time.monotonic() < deadline, f"never {state}"
        time.sleep(0.05)


def _job(attempt: int = 1) -> RunnerJob:
    return RunnerJob(id="7", kind="train", name="n", attempt=attempt, env={"MARK": "from-env"})


def test_local_runner_reports_exit_codes_and_writes_the_log(fake_python, tmp_path):
    log = tmp_path / "job.log"
    ok = LocalProcessRunner(fake_python('echo "$MARK"; exit 0'))
    handle = ok.start(_job(), tmp_path / "config.yaml", log)
    _wait_state(ok, handle, RunnerState.SUCCEEDED)
    assert f"started -m service.cli train --config {tmp_path / 'config.yaml'}" in log.read_text()
    assert "from-env" in log.read_text()
    failing = LocalProcessRunner(fake_python("exit 3"))
    _wait_state(failing, failing.start(_job(2), tmp_path / "config.yaml", log), RunnerState.FAILED)


def test_local_runner_readopts_a_live_attempt_and_sees_a_killed_one_as_lost(fake_python, tmp_path):
    runner = LocalProcessRunner(fake_python("sleep 30"))
    handle = runner.start(_job(), tmp_path / "config.yaml", tmp_path / "job.log")
    restarted = LocalProcessRunner()  # a new service process knows only the stored handle
    assert restarted.poll(handle) is RunnerState.RUNNING
    os.killpg(json.loads(handle)["pid"], signal.SIGKILL)
    _wait_state(restarted, handle, RunnerState.LOST)
    forged = json.dumps({**json.loads(handle), "pid": os.getpid()})  # pid reuse: start time differs
    assert restarted.poll(forged) is RunnerState.LOST


def test_local_runner_sees_an_attempt_killed_by_a_signal_as_lost(fake_python, tmp_path):
    runner = LocalProcessRunner(fake_python("kill -KILL $$"))
    _wait_state(runner, runner.start(_job(), tmp_path / "config.yaml", tmp_path / "job.log"), RunnerState.LOST)
    assert (tmp_path / "attempt-1.exit").read_text().strip() == str(128 + signal.SIGKILL)


def test_local_runner_cancel_ends_the_process_group(fake_python, tmp_path):
    grandchild_pid = tmp_path / "grandchild.pid"
    # The attempt's process starts a grandchild (as Lightning's DDP ranks or data workers would) and waits.
    runner = LocalProcessRunner(fake_python(f'sleep 30 & echo $! > {grandchild_pid}; wait'))
    handle = runner.start(_job(), tmp_path / "config.yaml", tmp_path / "job.log")
    deadline = time.monotonic() + 20
    while not grandchild_pid.exists() or not grandchild_pid.read_text().strip():
        assert time.monotonic() < deadline, "the fake job never started its grandchild"
        time.sleep(0.05)
    grandchild = int(grandchild_pid.read_text())
    assert process_start_time(grandchild) is not None
    runner.cancel(handle)
    _wait_state(runner, handle, RunnerState.LOST)
    deadline = time.monotonic() + 20
    while process_start_time(grandchild) is not None:  # a zombie counts as gone
        assert time.monotonic() < deadline, f"grandchild {grandchild} outlived the cancel (signalled the leader only?)"
        time.sleep(0.05)


def test_a_cancelled_attempt_has_not_ended_while_any_of_its_processes_still_runs(fake_python, tmp_path):
    # Python (here a shell that traps TERM) outlives the wrapper shell by its shutdown, during which it
    # writes its run's status: marking the run KILLED before then would be overwritten.
    done = tmp_path / "shutdown-done"
    runner = LocalProcessRunner(fake_python(f"trap 'sleep 2; touch {done}; exit 1' TERM; sleep 30 & wait"))
    handle = runner.start(_job(), tmp_path / "config.yaml", tmp_path / "job.log")
    time.sleep(0.5)
    runner.cancel(handle)
    _wait_state(runner, handle, RunnerState.LOST)  # the wrapper is gone at once
    assert not runner.ended(handle) and not done.exists(), "ended while the attempt was still shutting down"
    deadline = time.monotonic() + 20
    while not runner.ended(handle):
        assert time.monotonic() < deadline, "never ended"
        time.sleep(0.05)
    assert done.exists()


class ScriptedRunner(JobRunner):
    """Answers poll() from a per-attempt script of states."""

    def __init__(self, states: dict[int, list[RunnerState]]):
        self.states = states
        self.started: list[int] = []
        self.cancelled: list[str] = []

    def start(self, job, config_path, log_path):
        assert config_path.exists()
        self.started.append(job.attempt)
        return f"{job.id}:{job.attempt}"

    def poll(self, handle):
        attempt = int(handle.split(":")[1])
        script = self.states[attempt]
        return script.pop(0) if len(script) > 1 else script[0]

    def cancel(self, handle):
        self.cancelled.append(handle)


def test_supervisor_relaunches_lost_attempts_until_max_attempts(settings, store):
    job, _ = store.submit(JobKind.TRAIN, "lost", _config("lost"))
    runner = ScriptedRunner({1: [RunnerState.LOST], 2: [RunnerState.RUNNING, RunnerState.LOST]})
    supervisor = Supervisor(settings, store, runner, _NoTracking())
    for _ in range(4):
        supervisor.run_once()
    stored = store.get(job.id)
    assert runner.started == [1, 2]
    assert stored.state == JobState.FAILED.value and stored.attempts == 2
    assert "gave up after 2 attempts" in stored.message


def test_supervisor_respects_slots_and_cancels_running_jobs(settings, store):
    first, _ = store.submit(JobKind.TRAIN, "one", _config("one"))
    second, _ = store.submit(JobKind.TRAIN, "two", _config("two"))
    runner = ScriptedRunner({1: [RunnerState.RUNNING]})
    supervisor = Supervisor(settings, store, runner, _NoTracking())
    supervisor.run_once()
    assert store.get(first.id).state == "RUNNING" and store.get(second.id).state == "QUEUED"
    store.request_cancel(first.id)
    supervisor.run_once()
    assert store.get(first.id).state == "CANCELLED" and runner.cancelled == [f"{first.id}:1"]
    assert store.get(second.id).state == "RUNNING"


def test_supervisor_waits_for_the_tracking_store_before_launching(settings, store):
    store.submit(JobKind.TRAIN, "wait", _config("wait"))
    runner = ScriptedRunner({1: [RunnerState.SUCCEEDED]})
    ready = False
    supervisor = Supervisor(settings, store, runner, _NoTracking(), ready=lambda: ready)
    supervisor.run_once()
    assert runner.started == []
    ready = True
    supervisor.run_once()
    supervisor.run_once()
    assert runner.started == [1] and store.list().items[0].state == "SUCCEEDED"


def test_a_job_waits_while_another_job_trains_its_run_name(settings, store):
    settings.slots = 3
    first, _ = store.submit(JobKind.TRAIN, "same", _config("same"))
    second, _ = store.submit(JobKind.TRAIN, "same", _config("same"))
    search, _ = store.submit(JobKind.SEARCH, "same", _config("same"))  # searches name other folders
    runner = ScriptedRunner({1: [RunnerState.RUNNING, RunnerState.RUNNING, RunnerState.SUCCEEDED]})
    supervisor = Supervisor(settings, store, runner, _NoTracking())
    supervisor.run_once()
    assert [store.get(job.id).state for job in (first, second, search)] == ["RUNNING", "QUEUED", "RUNNING"]
    supervisor.run_once()
    assert store.get(second.id).state == "QUEUED"
    supervisor.run_once()  # the first ends; the second starts in the same pass
    assert [store.get(job.id).state for job in (first, second)] == ["SUCCEEDED", "RUNNING"]


def test_stored_timestamps_come_back_timezone_aware(store):
    job, _ = store.submit(JobKind.TRAIN, "tz", _config("tz"))
    store.mark_running(job.id, "test")
    stored = store.get(job.id)
    assert stored.created_at.tzinfo is not None and stored.started_at.utcoffset().total_seconds() == 0


def test_submissions_wake_the_supervisor_only_while_a_slot_is_free(settings, store):
    # A burst of submissions with every slot busy must not run a pass per submission (each pass is two
    # queries in a thread that contends with the event loop for the GIL); with a slot free, one must.
    passes = []

    class Counting(Supervisor):
        def run_once(self):
            passes.append(time.monotonic())
            super().run_once()

    settings.poll_interval = 60.0  # only wake-ups start passes during this test
    busy, _ = store.submit(JobKind.TRAIN, "busy", _config("busy"))
    supervisor = Counting(settings, store, ScriptedRunner({1: [RunnerState.RUNNING]}), _NoTracking())
    supervisor.start()
    try:
        _wait_for(lambda: store.get(busy.id).state == "RUNNING")
        time.sleep(0.5)
        before = len(passes)
        for index in range(30):
            store.submit(JobKind.TRAIN, f"queued-{index}", _config(f"queued-{index}"))
            supervisor.job_queued()
        time.sleep(0.5)
        assert len(passes) == before  # the slot is taken: no pass
        supervisor.runner.states[1] = [RunnerState.SUCCEEDED]
        supervisor.wake()  # as the poll interval would: the pass sees the job end and launches the next
        _wait_for(lambda: store.get(busy.id).state == "SUCCEEDED" and len(supervisor.runner.started) >= 2)
    finally:
        supervisor.stop()


def test_supervisor_checkpoints_the_write_ahead_log_not_the_committing_request(settings, store):
    # Commits never checkpoint (that fsyncs on the event loop for submissions); the supervisor does.
    database = settings.home / "jobs.db"
    assert str(database) in settings.database_url
    size = database.stat().st_size
    for index in range(200):
        store.submit(JobKind.TRAIN, f"wal-{index}", _config(f"wal-{index}"))
    assert database.stat().st_size == size  # every row still in the WAL
    settings.slots, settings.poll_interval = 0, 0.1
    supervisor = Supervisor(settings, store, ScriptedRunner({}), _NoTracking())
    supervisor.start()
    try:
        _wait_for(lambda: database.stat().st_size > size)
    finally:
        supervisor.stop()


def _wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class EndingRunner(ScriptedRunner):
    """Running until cancelled; then the process takes one more poll to end (as SIGTERM's grace does)."""

    def poll(self, handle):
        if not self.cancelled:
            return RunnerState.RUNNING
        self.polls_after_cancel = getattr(self, "polls_after_cancel", 0) + 1
        return RunnerState.RUNNING if self.polls_after_cancel == 1 else RunnerState.FAILED


def test_cancelled_jobs_runs_end_killed_in_mlflow_once_the_process_is_gone(settings, store):
    from mlflow.tracking import MlflowClient

    from service.tracking import TrackingReader

    uri = settings.tracking_uri
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("queue")
    parent = client.create_run(experiment, run_name="search").info.run_id
    trial = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    done = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(done, "FINISHED")
    job, _ = store.submit(JobKind.SEARCH, "search", _config("search"))
    runner = EndingRunner({})
    supervisor = Supervisor(settings, store, runner, TrackingReader(uri))
    supervisor.run_once()
    store.set_tracking(job.id, run_id=parent)
    store.request_cancel(job.id)
    supervisor.run_once()  # cancels; the process is still ending: the run must not be touched yet
    assert store.get(job.id).state == "CANCELLED" and client.get_run(parent).info.status == "RUNNING"
    supervisor.run_once()
    assert [client.get_run(run).info.status for run in (parent, trial, done)] == ["KILLED", "KILLED", "FINISHED"]


class _FlakyTracking:
    """The tracking store refuses the first write (busy), then takes it."""

    def __init__(self):
        self.attempts: list[str] = []

    def find_run_id(self, experiment, name):
        return "run-1"

    def mark_killed(self, run_id):
        self.attempts.append(run_id)
        if len(self.attempts) == 1:
            raise RuntimeError("database is locked")


def test_a_cancelled_jobs_kill_mark_is_retried_when_the_store_refuses_it(settings, store):
    job, _ = store.submit(JobKind.TRAIN, "busy", _config("busy"))
    runner = ScriptedRunner({1: [RunnerState.RUNNING, RunnerState.LOST]})
    tracking = _FlakyTracking()
    supervisor = Supervisor(settings, store, runner, tracking)
    supervisor.run_once()
    store.request_cancel(job.id)
    for _ in range(4):
        supervisor.run_once()
    assert tracking.attempts == ["run-1", "run-1"], "marked once after one refusal, then left alone"
