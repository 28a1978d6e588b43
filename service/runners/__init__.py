"""Job runners: a local process per job, or a Ray Job when a Ray address is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.runners.base import JobRunner, RunnerJob, RunnerState, launch_args

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["JobRunner", "RunnerJob", "RunnerState", "launch_args", "make_runner"]


def make_runner(settings: Settings) -> JobRunner:
    """The Ray Jobs runner when `settings.ray_address` is set, else one local process per job."""
    if settings.ray_address:
        from service.runners.ray_jobs import RayJobsRunner

        return RayJobsRunner(settings)
    from service.runners.local import LocalProcessRunner

    return LocalProcessRunner()
