"""Evaluations of registered models: submitted like training jobs, run by `attnlab evaluate`.

The API process checks the request against the registry (the version exists and carries an attnlab
contract, read from its MLmodel file through training.tracking, no torch); loading the model and
scoring the data happen in the job's own process, like every job.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict

from service.configs import ConfigRejected
from service.auth import WriterDep
from service.deps import ServicesDep
from service.routes.jobs import SUBMIT_RESPONSES, submit_job
from service.schemas import IdempotencyKey, JobOut
from service.store import JobKind
from service.tracking import TrackingReader
from training.evaluation_config import REGISTRY_URI, EvaluationConfig

router = APIRouter(prefix="/evaluations", tags=["evaluations"])


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: EvaluationConfig
    idempotency_key: str | None = IdempotencyKey


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=SUBMIT_RESPONSES,
             summary="Evaluate a registered model on data (a job of kind evaluate; metrics go to MLflow)")
async def submit_evaluation(request: EvaluationRequest, response: Response, services: ServicesDep,
                            who: WriterDep) -> JobOut:
    config = request.config
    await asyncio.to_thread(check_model, services.tracking, config.model)
    # The job record and the evaluation's MLflow run share this name, so the job finds its run.
    config = config.model_copy(update={"name": config.run_name})
    return await submit_job(JobKind.EVALUATE, config.run_name, config, request.idempotency_key, response, services,
                            who)


def check_model(reader: TrackingReader, model_uri: str) -> None:
    """ConfigRejected unless `model_uri` names a registered version that carries an attnlab contract."""
    from training import tracking
    from training.model_card import ContractUnreadable, missing_contract_message

    found = REGISTRY_URI.match(model_uri)
    if found is None:
        raise ConfigRejected(("model",), f"the service evaluates registered models only: models:/NAME/VERSION or "
                                         f"models:/NAME@ALIAS (got {model_uri!r})")
    try:
        version = tracking.resolve_version(reader.uri, found["name"], found["version"], found["alias"])
        contract = tracking.version_contract(reader.uri, found["name"], str(version.version))
    except (tracking.NotFound, ContractUnreadable) as error:
        raise ConfigRejected(("model",), str(error)) from None
    if contract is None:
        raise ConfigRejected(("model",), missing_contract_message(model_uri))
