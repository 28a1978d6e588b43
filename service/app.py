"""The attnlab REST API: `create_app(settings)` builds it; `attnlab serve` runs it under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.docs import add_local_docs
from service.errors import BodySizeLimit, add_exception_handlers
from service.lifecycle import start_services, stop_services
from service.routes import data_checks, health, jobs, registry, searches
from service.settings import Settings, get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.services = start_services(app.state.settings)
    yield
    stop_services(app.state.services)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="attnlab", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Submit training jobs and searches for Non-local, SE and self-attention "
                              "blocks; follow them; browse and promote registered models.")
    app.state.settings = settings or get_settings()
    add_exception_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_request_bytes)
    add_local_docs(app)
    for module in (jobs, searches, data_checks, registry, health):
        app.include_router(module.router)
    return app
