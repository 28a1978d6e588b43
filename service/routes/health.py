"""Liveness and a glance at the queue."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Depends

from service.deps import Services, get_services
from service.schemas import Health
from service.store import JobState

router = APIRouter(tags=["health"])


def redact(uri: str) -> str:
    """A URI without its password (postgresql://user:secret@db -> postgresql://user:***@db)."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", uri)


@router.get("/health", response_model=Health, summary="Service status and queue counts")
async def health(services: Annotated[Services, Depends(get_services)]) -> Health:
    store = services.store
    queued, running = await asyncio.gather(asyncio.to_thread(store.count, JobState.QUEUED),
                                           asyncio.to_thread(store.count, JobState.RUNNING))
    return Health(status="ok", warmed_up=services.warmed_up.is_set(), queued=queued, running=running, slots=services.settings.slots,
                  runner=services.supervisor.runner_name, tracking_uri=redact(services.settings.tracking_uri),
                  mlflow_ui=services.mlflow_ui_url,
                  mlflow_ui_ready=services.mlflow_ui is not None and services.mlflow_ui.ready.is_set())
