"""FastAPI dependencies: the running service's parts (who is calling: service/auth.py).

Routes declare what they need as `Annotated[..., Depends(...)]`; tests swap any of these through
`app.dependency_overrides`. They are `async def` although they never await: FastAPI runs sync
dependencies in its thread pool, and five thread hops per request dominated submit latency.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from service.audit import AuditLog
from service.mlflow_ui import MlflowUI
from service.settings import Settings
from service.store import JobStore
from service.supervisor import Supervisor
from service.tracking import TrackingReader
from service.users import UserStore


@dataclass
class Services:
    """What the app's lifespan builds from Settings and the routes share."""

    settings: Settings
    store: JobStore
    supervisor: Supervisor
    tracking: TrackingReader
    token: str  # the service token: the bootstrap admin's
    users: UserStore
    audit: AuditLog
    mlflow_ui: MlflowUI | None = None
    mlflow_ui_url: str | None = None  # where the UI this service starts answers (mlflow_ui.ready: once it does)
    # Set once the model checker and the tracking store are warm: requests before it are served,
    # just slower (the first submission may wait for the checker to import torch).
    warmed_up: threading.Event = field(default_factory=threading.Event)


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_settings(services: Annotated[Services, Depends(get_services)]) -> Settings:
    return services.settings


async def get_store(services: Annotated[Services, Depends(get_services)]) -> JobStore:
    return services.store


async def get_tracking(services: Annotated[Services, Depends(get_services)]) -> TrackingReader:
    return services.tracking


async def get_supervisor(services: Annotated[Services, Depends(get_services)]) -> Supervisor:
    return services.supervisor


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
TrackingDep = Annotated[TrackingReader, Depends(get_tracking)]
SupervisorDep = Annotated[Supervisor, Depends(get_supervisor)]
