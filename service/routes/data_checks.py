"""Dataset checks as jobs: `POST /data-checks` queues `attnlab data check` on a run config's data section.

The check probes every video (decoders, threads, the probe cache), so like training it runs as its own
process through the job runner, never in the API process; it is listed, followed and cancelled under
/jobs (kind `data_check`, name `<run name>.data-check`), and its report is the MLflow run of that name:
metrics `data_check/...` in the job's detail, the table and JSON as artifacts, the verdict as a tag.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict

from service.auth import WriterDep
from service.deps import ServicesDep
from service.routes.jobs import SUBMIT_RESPONSES, submit_job
from service.schemas import IdempotencyKey, JobOut
from service.store import JobKind
from training.data_check import DataCheckConfig

router = APIRouter(prefix="/data-checks", tags=["data checks"])


class DataCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: DataCheckConfig
    idempotency_key: str | None = IdempotencyKey


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=SUBMIT_RESPONSES,
             summary="Check a run config's dataset (any run config; its data is read)")
async def submit_data_check(request: DataCheckRequest, response: Response, services: ServicesDep,
                            who: WriterDep) -> JobOut:
    return await submit_job(JobKind.DATA_CHECK, request.config.run_name, request.config, request.idempotency_key,
                            response, services, who)
