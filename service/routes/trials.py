"""A search job's trials (live, from MLflow) and its ablation table so far; read as its job is (auth.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, status

from service.auth import ReaderDep
from service.deps import StoreDep, TrackingDep
from service.routes.jobs import READ_RESPONSES, JobId, visible_job
from service.schemas import SearchTrials
from service.store import JobKind
from service.trials import search_trials

router = APIRouter(prefix="/jobs", tags=["searches"])


@router.get("/{job_id}/trials", response_model=SearchTrials, summary="A search's trials and ablation table so far",
            responses={**READ_RESPONSES, 404: {"description": "no such job, or not a search"},
                       409: {"description": "the search has no MLflow run yet (it has not started)"}})
async def trials(job_id: JobId, store: StoreDep, tracking: TrackingDep, who: ReaderDep) -> SearchTrials:
    job = await asyncio.to_thread(visible_job, store, job_id, who)
    if job.kind != JobKind.SEARCH.value:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} is a {job.kind} job; only searches have trials")
    if not job.mlflow_run_id:
        raise HTTPException(status.HTTP_409_CONFLICT, f"search {job_id} has no MLflow run yet ({job.state})")
    return SearchTrials(**await asyncio.to_thread(search_trials, tracking, job.mlflow_run_id,
                                                  job.config.get("search") or {}))
