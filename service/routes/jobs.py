"""Training jobs: submit, list, show (with MLflow metrics), follow logs, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service.configs import prepare_config
from service.deps import Authorized, Services, ServicesDep, SettingsDep, StoreDep, SupervisorDep, TrackingDep
from service.schemas import JobDetail, JobList, JobOut, TrainJobRequest
from service.store import Job, JobKind, JobState, JobStore
from service.supervisor import log_path

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**62, description="the job's number")]
SUBMIT_RESPONSES = {200: {"model": JobOut, "description": "an earlier submission with this idempotency key"},
                    401: {"description": "missing or wrong bearer token"},
                    409: {"description": "idempotency key reused with a different config"},
                    413: {"description": "request body too large"}}
CANCEL_WAIT_SECONDS = 5.0
LOG_POLL_SECONDS = 0.5


async def submit_job(kind: JobKind, name: str, config: BaseModel, idempotency_key: str | None,
                     response: Response, services: Services) -> JobOut:
    """Check paths, queue the job (or find the key's job), wake the supervisor; 201 new / 200 known.

    Submit routes take the one Services dependency rather than three: each dependency FastAPI
    resolves costs CPU on the hottest route."""
    store, supervisor = services.store, services.supervisor
    prepared = prepare_config(config.model_dump(mode="json"), services.settings)
    # Inline, not in the thread pool: the insert takes ~0.2 ms on SQLite, and the thread hop cost more
    # than that under 20 concurrent clients (benchmarks/bench_service.py).
    job, created = store.submit(kind, name, prepared, idempotency_key)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    if created:
        supervisor.job_queued()
    return JobOut.of(job)


def get_job(store: JobStore, job_id: int) -> Job:
    job = store.get(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return job


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=SUBMIT_RESPONSES,
             dependencies=[Authorized], summary="Submit a training job")
async def submit_training(request: TrainJobRequest, response: Response, services: ServicesDep) -> JobOut:
    return await submit_job(JobKind.TRAIN, request.config.name, request.config, request.idempotency_key, response,
                            services)


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(store: StoreDep,
              state: Annotated[JobState | None, Query()] = None,
              kind: Annotated[JobKind | None, Query()] = None,
              name: Annotated[str | None, Query(max_length=128, description="run-name prefix")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> JobList:
    page = store.list(state=state, kind=kind, name=name, limit=limit, offset=offset)
    return JobList(items=[JobOut.of(job) for job in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobDetail, responses={404: {"description": "no such job"}},
            summary="One job, with its MLflow run's latest metrics")
def show_job(job_id: JobId, store: StoreDep, tracking: TrackingDep) -> JobDetail:
    job = get_job(store, job_id)
    detail = JobDetail(**JobOut.of(job).model_dump(), config=job.config)
    if job.mlflow_run_id:
        try:
            run = tracking.run(job.mlflow_run_id)
        except Exception:  # the tracking store is unreachable: show the job without metrics
            return detail
        detail.mlflow_status, detail.metrics = run.status, run.metrics
        detail.registered_model = detail.registered_model or run.registered_model
        detail.model_version = detail.model_version or run.model_version
    return detail


@router.get("/{job_id}/logs", response_class=StreamingResponse, summary="The job's log; follow=true streams",
            responses={200: {"content": {"text/plain": {}}}, 404: {"description": "no such job"}})
def job_logs(job_id: JobId, store: StoreDep, settings: SettingsDep,
             follow: Annotated[bool, Query(description="keep streaming until the job ends")] = False,
             offset: Annotated[int, Query(ge=0, le=2**62, description="start at this byte")] = 0,
             ) -> StreamingResponse:
    get_job(store, job_id)
    path = log_path(settings, job_id)

    async def chunks() -> AsyncIterator[bytes]:
        position = offset
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


def _read_from(path, position: int, size: int = 1 << 16) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(position)
            return handle.read(size)
    except FileNotFoundError:
        return b""


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Authorized],
             responses={401: {"description": "missing or wrong bearer token"}, 404: {"description": "no such job"}},
             summary="Cancel a queued or running job (finished jobs are returned unchanged)")
async def cancel_job(job_id: JobId, store: StoreDep, supervisor: SupervisorDep) -> JobOut:
    await asyncio.to_thread(get_job, store, job_id)
    job = await asyncio.to_thread(store.request_cancel, job_id)
    supervisor.wake()
    deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
    while job is not None and not JobState(job.state).finished and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        job = await asyncio.to_thread(store.get, job_id)
    return JobOut.of(job)
