"""The seam between the job supervisor and whatever executes a job: a local process or a Ray Job.

The supervisor (service/supervisor.py) owns the job table; a runner only starts, polls and cancels
one attempt of one job. Every job is executed through the same CLI entry point a user would type
(`attnlab train --config FILE` / `attnlab tune --config FILE`), so the API process never imports
torch. `launch_args(job, config_path)` builds that argument list; runners prepend their interpreter
(local: `python -m service.cli`, Ray: the `attnlab` console script in the job's entrypoint).

Contract for runners (`LocalProcessRunner` in local.py, `RayJobsRunner` in ray_jobs.py):

- `start(job, config_path, log_path) -> handle`: begin one attempt and return at once. The handle is
  an opaque string the supervisor stores in the job table and hands back after a service restart,
  so it must be enough on its own to find the attempt again (local: pid + process start time;
  Ray: the submission id). Attempt numbers are unique per job, so `job.attempt` can make a fresh
  Ray submission id (Ray answers a duplicate submission_id with HTTP 500).
- `poll(handle) -> RunnerState`: never raises for a job that merely failed. `LOST` means the attempt
  is gone without a verdict (process killed with the old service, Ray cluster restarted): the
  supervisor then re-launches the same command, and training resumes from its last checkpoint
  because the run name is stable.
- `cancel(handle)`: best effort, idempotent; the supervisor records CANCELLED itself.
- Logs: the service streams `log_path` (under $ATTNLAB_HOME/jobs/<id>/, one file per job, attempts
  appended). A runner whose attempt writes that file itself (local) does nothing more; a runner whose
  logs live elsewhere (Ray) copies new output into it in `sync_logs(handle, log_path)`, which the
  supervisor calls on every poll of a running attempt and once more after it ends.
- `config_path` is a file on the service's machine. A runner executing elsewhere must ship its
  content (e.g. read it and pass it with the entrypoint or runtime_env).
- `job.env` holds environment variables the job needs (ATTNLAB_HOME, MLFLOW_TRACKING_URI); pass them on.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

JobKind = Literal["train", "search", "data_check"]

# The CLI sub-command (its words) that executes each kind of job.
COMMAND_FOR_KIND: dict[str, tuple[str, ...]] = {"train": ("train",), "search": ("tune",),
                                                "data_check": ("data", "check")}


class RunnerState(str, enum.Enum):
    """What a runner can say about one attempt."""

    RUNNING = "RUNNING"  # started (or waiting for cluster resources) and not finished
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # stopped by cancel() or by someone else (e.g. `ray job stop`)
    LOST = "LOST"  # gone without a verdict: the supervisor re-launches it (resume)


@dataclass(frozen=True)
class RunnerJob:
    """The part of a job record a runner needs to launch one attempt."""

    id: str
    kind: JobKind
    name: str  # the run name; stable across attempts, so a re-launch resumes
    attempt: int  # 1 for the first launch, +1 for each re-launch after LOST
    env: dict[str, str] = field(default_factory=dict)


def launch_args(job: RunnerJob, config_path: Path) -> list[str]:
    """The `attnlab` arguments that execute `job`: e.g. ["train", "--config", "/…/config.yaml"]."""
    return [*COMMAND_FOR_KIND[job.kind], "--config", str(config_path)]


class JobRunner(ABC):
    """Executes job attempts; see the module docstring for the contract."""

    @abstractmethod
    def start(self, job: RunnerJob, config_path: Path, log_path: Path) -> str:
        """Launch one attempt without waiting for it; return a handle that survives restarts."""

    @abstractmethod
    def poll(self, handle: str) -> RunnerState:
        """The attempt's state now."""

    @abstractmethod
    def cancel(self, handle: str) -> None:
        """Stop the attempt (best effort, idempotent)."""

    def ended(self, handle: str) -> bool:
        """Whether every process of the attempt is gone (nothing of it can still write to MLflow)."""
        return self.poll(handle) is not RunnerState.RUNNING

    def sync_logs(self, handle: str, log_path: Path) -> None:
        """Append output the attempt produced since the last call to `log_path` (no-op if it writes there)."""

    def close(self) -> None:
        """Release connections at service shutdown; running attempts keep running."""
