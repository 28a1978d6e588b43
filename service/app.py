"""The attnlab REST API and its web page: `create_app(settings)` builds it; `attnlab serve` runs it under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.docs import add_local_docs
from service.errors import BodySizeLimit, add_exception_handlers
from service.lifecycle import start_services, stop_services
from service.methods import AnswerOptions
from service.routes import audit, data_checks, health, jobs, registry, searches, trials, users
from service.routes.web import add_web, close_web
from service.settings import Settings, get_settings
from service.yaml_body import YamlBodies


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.services = start_services(app.state.settings)
    yield
    await close_web(app)
    stop_services(app.state.services)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="attnlab", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Submit training jobs and searches for Non-local, SE and self-attention "
                              "blocks; follow them; browse and promote registered models.")
    app.state.settings = settings or get_settings()
    add_exception_handlers(app)
    # The last added runs first: OPTIONS answered, then the size counted, then YAML turned into JSON.
    app.add_middleware(YamlBodies)
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_request_bytes)
    app.add_middleware(AnswerOptions)
    add_local_docs(app)
    for module in (jobs, trials, searches, data_checks, registry, users, audit, health):
        app.include_router(module.router)
    add_web(app)
    return app
