"""Run job attempts as Ray Jobs on a cluster (used when `ATTNLAB_RAY_ADDRESS` is set).

Each attempt is one Ray Job submitted through the Jobs API of the head's dashboard
(`ray.job_submission.JobSubmissionClient`). The entrypoint is the same CLI a user types,
`attnlab train --config FILE`; since `config_path` only exists on the service's machine, its bytes
travel base64-encoded in the job's runtime_env and a short shell prefix writes them to a temporary
file on whichever node runs the driver. Checkpoints and the MLflow store must live on storage every
node shares (docker/compose.yaml mounts one volume at ATTNLAB_HOME on all of them).

Why the details below:
- The handle is the submission id `attnlab-<job id>-<attempt>`: unique per attempt, and enough on its
  own to find the attempt again after a service restart. Starting attempt N first stops attempts
  1..N-1 of the same job: one the service lost track of (it died before recording the handle) must
  not train the same run concurrently.
- Ray 2.60 answers a duplicate submission id with HTTP 500. A `start` repeated for the same attempt
  (a retried launch) finds the existing job and returns the same handle instead of failing.
- Ray Jobs are lost with the cluster: a 404 for a known handle means LOST, and the supervisor
  re-launches the attempt (training resumes from the stable run name). A head that does not answer
  for `unreachable_grace` seconds counts as lost too; shorter outages read as still RUNNING.
- Token auth (Ray >= 2.52, on by default for local clusters since 2.59): the Jobs API wants
  `Authorization: Bearer <token>`; the token comes from `ATTNLAB_RAY_TOKEN`, else Ray's own lookup
  (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`) when `RAY_AUTH_MODE=token`.
"""

from __future__ import annotations

import base64
import inspect
import logging
import shlex
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from service.runners.base import JobRunner, RunnerJob, RunnerState, launch_args

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from service.settings import Settings

logger = logging.getLogger(__name__)

# Environment variable that carries the config file's bytes (base64) to the driver's node.
CONFIG_ENV = "ATTNLAB_JOB_CONFIG_B64"

# Ray JobStatus value -> what the supervisor needs to know; PENDING waits for cluster resources.
STATE_FOR_RAY_STATUS: dict[str, RunnerState] = {
    "PENDING": RunnerState.RUNNING,
    "RUNNING": RunnerState.RUNNING,
    "SUCCEEDED": RunnerState.SUCCEEDED,
    "FAILED": RunnerState.FAILED,
    "STOPPED": RunnerState.CANCELLED,
}


def submission_id(job: RunnerJob) -> str:
    """One Ray submission id per attempt of a job."""
    return f"attnlab-{job.id}-{job.attempt}"


def entrypoint(command: Sequence[str], job: RunnerJob) -> str:
    """The shell line Ray runs: materialise the shipped config, then exec the `attnlab` CLI on it.

    `command` is how the nodes start the CLI (`attnlab` in the images; tests use
    `python -m service.cli`). The config lands in a small temporary file on the driver's node.
    """
    node_config = "$config"  # the shell variable holding the node-local copy's path
    words = [*command, *launch_args(job, Path(node_config))]
    line = " ".join(f'"{word}"' if word == node_config else shlex.quote(word) for word in words)
    return (
        'config="$(mktemp "${TMPDIR:-/tmp}/attnlab-job-XXXXXX")" && '
        f'printf %s "${CONFIG_ENV}" | base64 -d > "$config" && '
        f"exec {line}"
    )


class RayJobsRunner(JobRunner):
    """Starts, polls, cancels and collects the logs of Ray Jobs for the service's supervisor."""

    def __init__(
        self,
        settings: Settings,
        *,
        command: Sequence[str] = ("attnlab",),
        request_timeout: float = 30.0,
        unreachable_grace: float = 300.0,
        log_interval: float = 3.0,
    ) -> None:
        if not settings.ray_address:
            raise ValueError("RayJobsRunner needs a Ray dashboard address: set ATTNLAB_RAY_ADDRESS, e.g. http://ray-head:8265")
        self.address = settings.ray_address
        self.token = settings.ray_token.get_secret_value() if settings.ray_token else None
        self.command = tuple(command)
        self.request_timeout = request_timeout
        self.unreachable_grace = unreachable_grace
        self.log_interval = log_interval  # Ray returns the whole log each time: fetch it this often
        self._client: JobSubmissionClient | None = None
        self._unreachable_since: dict[str, float] = {}
        self._last_log_fetch: dict[str, float] = {}
        self._ended: set[str] = set()  # handles whose last poll saw a verdict: their logs are final

    # -- connection ------------------------------------------------------------------------

    def client(self) -> JobSubmissionClient:
        """The Jobs API client, created on first use (creating it already talks to the head)."""
        if self._client is None:
            self._client = _make_client(self.address, self.token, self.request_timeout)
        return self._client

    # -- JobRunner -------------------------------------------------------------------------

    def start(self, job: RunnerJob, config_path: Path, log_path: Path) -> str:
        handle = submission_id(job)
        config = base64.b64encode(Path(config_path).read_bytes()).decode("ascii")
        runtime_env = {"env_vars": {**job.env, CONFIG_ENV: config}}
        metadata = {"attnlab_job": job.id, "attnlab_attempt": str(job.attempt), "attnlab_name": job.name}
        client = self.client()
        for earlier in range(1, job.attempt):
            self.cancel(submission_id(replace(job, attempt=earlier)))
        try:
            client.submit_job(
                entrypoint=entrypoint(self.command, job),
                submission_id=handle,
                runtime_env=runtime_env,
                metadata=metadata,
            )
        except RuntimeError as error:
            if not self._exists(handle):
                raise RuntimeError(f"Ray cluster at {self.address} refused job {job.id} attempt {job.attempt}: {error}") from error
            logger.info("Ray job %s was already submitted; reusing it", handle)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"[attnlab] attempt {job.attempt} submitted to Ray at {self.address} as {handle}\n")
        return handle

    def poll(self, handle: str) -> RunnerState:
        try:
            status = str(self.client().get_job_status(handle))
        except OSError as error:  # requests' errors and the client's ConnectionError are OSErrors
            first_failure = self._unreachable_since.setdefault(handle, time.monotonic())
            if time.monotonic() - first_failure >= self.unreachable_grace:
                logger.warning("Ray at %s unreachable for %.0f s; job %s counts as lost: %s", self.address, self.unreachable_grace, handle, error)
                return RunnerState.LOST
            return RunnerState.RUNNING
        except RuntimeError as error:
            if _is_not_found(error):
                return RunnerState.LOST
            raise
        self._unreachable_since.pop(handle, None)
        state = STATE_FOR_RAY_STATUS.get(status, RunnerState.RUNNING)
        if state is not RunnerState.RUNNING:
            self._ended.add(handle)
        return state

    def cancel(self, handle: str) -> None:
        try:
            self.client().stop_job(handle)
        except RuntimeError as error:
            if not _is_not_found(error):
                raise

    def sync_logs(self, handle: str, log_path: Path) -> None:
        """Append the part of the Ray job's log not copied yet; the offset survives restarts."""
        offset_path = log_path.parent / f".{handle}.log-offset"
        now = time.monotonic()
        if handle not in self._ended and now - self._last_log_fetch.get(handle, -self.log_interval) < self.log_interval:
            return
        self._last_log_fetch[handle] = now
        try:
            logs = self.client().get_job_logs(handle)
        except (OSError, RuntimeError) as error:
            logger.debug("no logs for Ray job %s yet: %s", handle, error)
            return
        copied = int(offset_path.read_text()) if offset_path.exists() else 0
        if len(logs) <= copied:
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            log.write(logs[copied:])
        offset_path.write_text(str(len(logs)))

    def close(self) -> None:
        self._client = None

    # -- helpers ---------------------------------------------------------------------------

    def _exists(self, handle: str) -> bool:
        try:
            self.client().get_job_info(handle)
        except RuntimeError:
            return False
        return True


def _is_not_found(error: RuntimeError) -> bool:
    return "status code 404" in str(error) or "does not exist" in str(error)


def _make_client(address: str, token: str | None, request_timeout: float) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    if not _request_takes_keywords(JobSubmissionClient):
        logger.warning("this Ray's JobSubmissionClient._do_request takes no extra keywords: requests to the "
                       "Ray head at %s go without a timeout, so a hung head can stall the supervisor", address)
        return JobSubmissionClient(address, headers=headers)

    class TimedJobSubmissionClient(JobSubmissionClient):
        """The SDK sends requests without a timeout; a hung head must not hang the supervisor."""

        def _do_request(self, method, endpoint, **kwargs):
            kwargs.setdefault("timeout", request_timeout)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobSubmissionClient(address, headers=headers)


def _request_takes_keywords(client_class: type) -> bool:
    """Whether the SDK's private `_do_request(method, endpoint, **kwargs)` still forwards keywords to
    `requests.request` (Ray 2.60 documents that it does); tests/service/test_ray_client_timeout.py
    fails when a Ray upgrade changes it, and `_make_client` falls back to the plain client."""
    request = getattr(client_class, "_do_request", None)
    if request is None:
        return False
    parameters = list(inspect.signature(request).parameters.values())
    return [p.name for p in parameters[:3]] == ["self", "method", "endpoint"] and \
        any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
