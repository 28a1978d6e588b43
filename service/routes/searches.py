"""Hyperparameter searches: submitted like training jobs, run by `attnlab tune`, listed under /jobs."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.auth import WriterDep
from service.deps import ServicesDep
from service.routes.jobs import SUBMIT_RESPONSES, submit_job
from service.schemas import JobOut, SearchJobConfig, SearchJobRequest
from service.store import JobKind
from service.yaml_body import openapi_yaml_body

router = APIRouter(prefix="/searches", tags=["searches"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=SUBMIT_RESPONSES,
             openapi_extra=openapi_yaml_body(SearchJobConfig),
             summary="Submit a search (a training config plus a search section; JSON or YAML)")
async def submit_search(request: SearchJobRequest, response: Response, services: ServicesDep,
                        who: WriterDep) -> JobOut:
    # The search's MLflow parent run carries the search name, so the job is tracked by it.
    return await submit_job(JobKind.SEARCH, request.config.search_name, request.config, request.idempotency_key,
                            response, services, who)
