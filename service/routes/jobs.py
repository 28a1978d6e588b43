"""Training jobs: submit, list, show (with MLflow metrics), follow logs, cancel."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service.auth import ReaderDep, WriterDep, deny
from service.configs import prepare_config
from service.deps import Services, ServicesDep, SettingsDep, StoreDep, SupervisorDep, TrackingDep
from service.schemas import JobDetail, JobList, JobOut, TrainJobConfig, TrainJobRequest
from service.store import Job, JobKind, JobState, JobStore, QueueFull
from service.supervisor import log_path
from service.users import Principal
from service.yaml_body import openapi_yaml_body

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**62, description="the job's number")]
SUBMIT_RESPONSES = {200: {"model": JobOut, "description": "an earlier submission with this idempotency key"},
                    401: {"description": "missing or wrong bearer token"},
                    403: {"description": "a viewer's token: viewers only read"},
                    409: {"description": "idempotency key reused with a different config"},
                    413: {"description": "request body too large"},
                    429: {"description": "the user already has ATTNLAB_MAX_QUEUED_PER_USER queued jobs"}}
READ_RESPONSES = {401: {"description": "missing or wrong bearer token"},
                  403: {"description": "another user's job"}, 404: {"description": "no such job"}}
CANCEL_WAIT_SECONDS = 5.0
LOG_POLL_SECONDS = 0.5


async def submit_job(kind: JobKind, name: str, config: BaseModel, idempotency_key: str | None,
                     response: Response, services: Services, who: Principal) -> JobOut:
    """Check paths, queue the job as `who`'s (or find the key's job), wake the supervisor; 201 new / 200 known.

    Submit routes take the one Services dependency rather than three: each dependency FastAPI
    resolves costs CPU on the hottest route."""
    store, supervisor = services.store, services.supervisor
    prepared = prepare_config(config.model_dump(mode="json"), services.settings)
    # Inline, not in the thread pool: the insert takes ~0.2 ms on SQLite, and the thread hop cost more
    # than that under 20 concurrent clients (benchmarks/bench_service.py). Being on the event loop
    # also makes the per-user queue bound's count-then-insert atomic within this process.
    limit = None if who.is_admin else services.settings.max_queued_per_user
    action = f"{kind.value}.submit"

    def audited(connection, job_id: int) -> None:
        services.audit.record(who, action, f"job {job_id}", {"kind": kind.value, "name": name}, connection=connection)

    try:
        job, created = store.submit(kind, name, prepared, idempotency_key, owner=who.name, max_queued=limit,
                                    also=audited)
    except QueueFull as full:
        raise deny(services, who, action, f"{kind.value} {name}", str(full), status.HTTP_429_TOO_MANY_REQUESTS) from None
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    if created:
        supervisor.job_queued()
    return JobOut.of(job)


def get_job(store: JobStore, job_id: int) -> Job:
    job = store.get(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return job


def visible_job(store: JobStore, job_id: int, who: Principal) -> Job:
    """The job, if `who` may see it: admins and viewers see every job, users their own."""
    job = get_job(store, job_id)
    if not who.reads_everything and not who.owns(job.owner):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"job {job_id} belongs to another user; only its "
                                                       "owner, an admin or a viewer can see it")
    return job


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=SUBMIT_RESPONSES,
             openapi_extra=openapi_yaml_body(TrainJobConfig),
             summary="Submit a training job (JSON request, or the YAML config itself)")
async def submit_training(request: TrainJobRequest, response: Response, services: ServicesDep,
                          who: WriterDep) -> JobOut:
    return await submit_job(JobKind.TRAIN, request.config.name, request.config, request.idempotency_key, response,
                            services, who)


@router.get("", response_model=JobList, responses={401: READ_RESPONSES[401], 403: {"description": "a user "
            "asking for another user's jobs"}}, summary="List jobs, newest first (a user's own jobs only)")
async def list_jobs(store: StoreDep, who: ReaderDep,
              state: Annotated[JobState | None, Query()] = None,
              kind: Annotated[JobKind | None, Query()] = None,
              name: Annotated[str | None, Query(max_length=128, description="run-name prefix")] = None,
              owner: Annotated[str | None, Query(max_length=64, description="submitter's user name")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> JobList:
    if not who.reads_everything:
        if owner not in (None, who.name):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"a user lists only its own jobs (owner={who.name})")
        owner = who.name
    page = store.list(state=state, kind=kind, name=name, owner=owner, limit=limit, offset=offset)
    return JobList(items=[JobOut.of(job) for job in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobDetail, responses=READ_RESPONSES,
            summary="One job, with its MLflow run's latest metrics")
def show_job(job_id: JobId, store: StoreDep, tracking: TrackingDep, who: ReaderDep) -> JobDetail:
    job = visible_job(store, job_id, who)
    detail = JobDetail(**JobOut.of(job).model_dump(), config=job.config)
    if job.mlflow_run_id:
        try:
            run = tracking.run(job.mlflow_run_id)
        except Exception:  # the tracking store is unreachable: show the job without metrics
            return detail
        detail.mlflow_status, detail.metrics, detail.step = run.status, run.metrics, run.step
        detail.registered_model = detail.registered_model or run.registered_model
        detail.model_version = detail.model_version or run.model_version
    return detail


@router.get("/{job_id}/logs", response_class=StreamingResponse, summary="The job's log; follow=true streams",
            responses={200: {"content": {"text/plain": {}}}, **READ_RESPONSES})
def job_logs(job_id: JobId, store: StoreDep, settings: SettingsDep, who: ReaderDep,
             follow: Annotated[bool, Query(description="keep streaming until the job ends")] = False,
             offset: Annotated[int, Query(ge=0, le=2**62, description="start at this byte")] = 0,
             tail: Annotated[int | None, Query(ge=1, le=2**31, description="instead of offset: start at the "
                                               "first whole line of the last `tail` bytes")] = None,
             ) -> StreamingResponse:
    visible_job(store, job_id, who)
    path = log_path(settings, job_id)

    async def chunks() -> AsyncIterator[bytes]:
        position = offset if tail is None else await asyncio.to_thread(_tail_start, path, tail)
        while True:
            data = await asyncio.to_thread(_read_from, path, position)
            position += len(data)
            if data:
                yield data
                continue
            if not follow:
                return
            job = await asyncio.to_thread(store.get, job_id)
            if job is None or JobState(job.state).finished:
                rest = await asyncio.to_thread(_read_from, path, position)
                if rest:
                    yield rest
                return
            await asyncio.sleep(LOG_POLL_SECONDS)

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _tail_start(path, tail: int) -> int:
    """The offset of the first line that starts within the last `tail` bytes (0 for a shorter log)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0
    if size <= tail:
        return 0
    start = size - tail
    newline = _read_from(path, start - 1, tail + 1).find(b"\n")  # a line starting exactly at `start` counts
    return start + newline if newline >= 0 else size


def _read_from(path, position: int, size: int = 1 << 16) -> bytes:
    try:
        with open(path, "rb") as handle:
            # Past the end there is nothing yet; reading there fails (EINVAL) beyond the file system's
            # largest offset (2^44 on ext4), which the schema's 2^62 allows.
            if position >= os.fstat(handle.fileno()).st_size:
                return b""
            handle.seek(position)
            return handle.read(size)
    except FileNotFoundError:
        return b""


@router.post("/{job_id}/cancel", response_model=JobOut,
             responses={**READ_RESPONSES, 403: {"description": "another user's job, or a viewer's token"},
                        409: {"description": "the job had already finished: nothing to cancel"}},
             summary="Cancel a queued or running job; users cancel their own jobs, admins any")
async def cancel_job(job_id: JobId, services: ServicesDep, who: WriterDep) -> JobOut:
    store, supervisor = services.store, services.supervisor
    job = await asyncio.to_thread(get_job, store, job_id)
    # Whose job it is comes first: someone else's job answers 403 whatever its state, so a
    # refused caller learns nothing about it beyond its existence.
    if not (who.is_admin or who.owns(job.owner)):
        raise deny(services, who, "job.cancel", f"job {job_id}", f"job {job_id} belongs to another user; users "
                                                                 "cancel only their own jobs (admins any)")
    if JobState(job.state).finished:
        raise deny(services, who, "job.cancel", f"job {job_id}", f"job {job_id} already ended {job.state}; only "
                   "QUEUED or RUNNING jobs can be cancelled", status.HTTP_409_CONFLICT)
    services.audit.record(who, "job.cancel", f"job {job_id}", {"state": job.state, "owner": job.owner})
    job = await asyncio.to_thread(store.request_cancel, job_id)
    supervisor.wake()
    deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
    while job is not None and not JobState(job.state).finished and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        job = await asyncio.to_thread(store.get, job_id)
    return JobOut.of(job)
