"""The queue worker: one thread that launches queued jobs into free slots and watches running ones.

Only this thread talks to the runner, so launching, polling and cancelling never race. Restart
safety comes from the job table alone: after a restart, a RUNNING job whose attempt is still alive
is re-adopted through its stored handle; one whose attempt vanished (LOST) is launched again with
the same command and run name, so training resumes from its last checkpoint (attempt + 1, up to
`settings.max_attempts`); QUEUED jobs simply wait for their slot, and a job whose run name a running
job is training waits for that job to end (one writer per run). A finished job is never launched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from service.configs import job_config_yaml
from service.runners import JobRunner, RunnerJob, RunnerState
from service.settings import Settings
from service.store import Job, JobState, JobStore
from service.tracking import TrackingReader
from training.tracking import UI_URL_ENV

log = logging.getLogger("attnlab.service")

# A cancelled attempt gets SIGTERM, then SIGKILL after the runner's grace (10 s locally); past this,
# its MLflow run is marked KILLED even if the runner still reports it running.
KILLED_MARK_WAIT_SECONDS = 30.0
KILLED_MARK_RETRY_SECONDS = 300.0
RUNNER_TO_JOB_STATE = {RunnerState.SUCCEEDED: JobState.SUCCEEDED, RunnerState.FAILED: JobState.FAILED,
                       RunnerState.CANCELLED: JobState.CANCELLED}


def job_dir(settings: Settings, job_id: int) -> Path:
    return settings.jobs_dir / str(job_id)


def log_path(settings: Settings, job_id: int) -> Path:
    return job_dir(settings, job_id) / "job.log"


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class Supervisor:
    def __init__(self, settings: Settings, store: JobStore, runner: JobRunner, tracking: TrackingReader,
                 ready: Callable[[], bool] = lambda: True, mlflow_ui_url: str | None = None):
        self.settings = settings
        self.mlflow_ui_url = mlflow_ui_url  # told to jobs, so their logs point at this UI
        self.store = store
        self.runner = runner
        self.tracking = tracking
        self.ready = ready  # launches wait for this (e.g. the MLflow UI finished migrating the store)
        self.runner_name = type(runner).__name__
        # Cancelled attempts whose process may still be ending: job id -> (job, handle, deadline).
        # Their MLflow runs are marked KILLED once the process is gone, so its own last write (a
        # FAILED on SIGTERM) cannot overwrite it.
        self._ending: dict[int, tuple[Job, str, float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._slot_free = True  # after the last pass; a new submission only wakes the loop when True
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="attnlab-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; running attempts keep running and are re-adopted by the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        self._wake.set()

    def job_queued(self) -> None:
        """A submission arrived: wake the loop only if the last pass left a slot free.

        With every slot busy (or ``slots=0``) a pass launches nothing, and the pass that sees a job end
        launches the queue's next job itself. Waking on every submission ran back-to-back passes — two
        queries each, in a thread contending with the event loop for the GIL — under a burst of submits.
        """
        if self._slot_free:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.store.checkpoint()
            except Exception:  # a broken pass must not end supervision; the next pass retries
                log.exception("supervisor pass failed")
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()

    # ---- one pass ---------------------------------------------------------------------------

    def run_once(self) -> None:
        for job in self.store.in_state(JobState.RUNNING):
            self._watch(job)
        self._mark_cancelled_runs()
        if not self.ready():
            return
        free = self.settings.slots - self.store.count(JobState.RUNNING)
        if free > 0:
            started: set[tuple[str, str]] = set()
            for job in self.store.launchable(limit=free):
                if (job.kind, job.name) in started:  # two queued jobs of one run name: the older first
                    continue
                if self.store.mark_running(job.id, self.runner_name):
                    started.add((job.kind, job.name))
                    self._launch(job, attempt=1)
                    free -= 1
        self._slot_free = free > 0

    def _watch(self, job: Job) -> None:
        if job.handle is None:  # the service stopped between marking it RUNNING and launching it
            self._relaunch(job, "the service stopped while launching it")
            return
        path = log_path(self.settings, job.id)
        if job.cancel_requested:
            self.runner.cancel(job.handle)
            self.runner.sync_logs(job.handle, path)
            self.store.finish(job.id, JobState.CANCELLED, "cancelled while running")
            self._append(path, f"attnlab: job {job.id} cancelled")
            self._ending[job.id] = (job, job.handle, time.monotonic() + KILLED_MARK_WAIT_SECONDS)
            return
        state = self.runner.poll(job.handle)
        self.runner.sync_logs(job.handle, path)
        self._track(job, final=state is not RunnerState.RUNNING)
        if state is RunnerState.RUNNING:
            return
        if state is RunnerState.LOST:
            self._relaunch(job, "its process was killed or vanished without a verdict")
            return
        outcome = RUNNER_TO_JOB_STATE[state]
        message = None if outcome is JobState.SUCCEEDED else tail(path) or state.value.lower()
        self.store.finish(job.id, outcome, message)
        self._append(path, f"attnlab: job {job.id} {outcome.value}")

    def _relaunch(self, job: Job, why: str) -> None:
        path = log_path(self.settings, job.id)
        if job.attempts >= self.settings.max_attempts:
            message = f"attempt {job.attempts} lost ({why}); gave up after {job.attempts} attempts"
            self.store.finish(job.id, JobState.FAILED, message)
            self._append(path, f"attnlab: {message}")
            return
        self._append(path, f"attnlab: attempt {job.attempts} lost ({why}); launching attempt "
                           f"{job.attempts + 1}, resuming from the last checkpoint")
        self._launch(job, attempt=job.attempts + 1)

    def _launch(self, job: Job, attempt: int) -> None:
        folder = job_dir(self.settings, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / "config.yaml"
        config_path.write_text(job_config_yaml(job.config))
        env = {"ATTNLAB_HOME": str(self.settings.home), "MLFLOW_TRACKING_URI": self.settings.tracking_uri,
               "ATTNLAB_JOB_ID": str(job.id)}
        if self.mlflow_ui_url:
            env[UI_URL_ENV] = self.mlflow_ui_url
        runner_job = RunnerJob(id=str(job.id), kind=job.kind, name=job.name, attempt=attempt, env=env)
        path = log_path(self.settings, job.id)
        self._append(path, f"attnlab: job {job.id} attempt {attempt} starting ({job.kind} {job.name})")
        try:
            handle = self.runner.start(runner_job, config_path, path)
        except Exception as error:  # the runner could not launch at all: the job fails, the service lives
            log.exception("launching job %s failed", job.id)
            self.store.finish(job.id, JobState.FAILED, f"could not launch: {error}")
            return
        if not self.store.record_attempt(job.id, attempt, handle):
            self.runner.cancel(handle)  # cancelled in the meantime

    def _mark_cancelled_runs(self) -> None:
        """Mark the MLflow run (and a search's unfinished trials) of each cancelled job KILLED, once
        all its processes have ended or its grace period is over. A failed write (tracking store busy
        or unreachable) is retried on the next passes, for up to `KILLED_MARK_RETRY_SECONDS`."""
        now = time.monotonic()
        for job_id, (job, handle, deadline) in list(self._ending.items()):
            if now < deadline and not self.runner.ended(handle):
                continue
            try:
                run_id = job.mlflow_run_id or self.tracking.find_run_id(_experiment(job.config), job.name)
                if run_id is not None:
                    self.tracking.mark_killed(run_id)
            except Exception:
                if now < deadline + KILLED_MARK_RETRY_SECONDS:
                    log.debug("marking the MLflow run of cancelled job %s KILLED failed; retrying", job_id,
                              exc_info=True)
                    continue
                log.warning("could not mark the MLflow run of cancelled job %s KILLED", job_id, exc_info=True)
            del self._ending[job_id]

    def _track(self, job: Job, final: bool) -> None:
        """Record the job's MLflow run id, and at the end its registered version (best effort)."""
        if job.mlflow_run_id and not final:
            return
        try:
            run_id = job.mlflow_run_id or self.tracking.find_run_id(_experiment(job.config), job.name)
            if run_id is None:
                return
            view = self.tracking.run(run_id) if final else None
            self.store.set_tracking(job.id, run_id=run_id, registered_model=view and view.registered_model,
                                    model_version=view and view.model_version)
        except Exception:  # tracking store busy or unreachable: the next pass tries again
            log.debug("reading MLflow for job %s failed", job.id, exc_info=True)

    @staticmethod
    def _append(path: Path, line: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(line + "\n")


def _experiment(config: dict) -> str:
    tracking = config.get("tracking") or (config.get("base") or {}).get("tracking") or {}
    return tracking.get("experiment") or "attnlab"
