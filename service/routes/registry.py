"""The MLflow model registry: registered models, their versions with metrics and aliases, promotion."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from service.auth import Readable, WriterDep
from service.deps import ServicesDep, TrackingDep
from service.schemas import AliasRequest, ModelDetail, ModelOut

router = APIRouter(prefix="/models", tags=["registry"])

ModelName = Annotated[str, Path(min_length=1, max_length=256, description="registered model name")]
AliasName = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$",
                                description="alias, e.g. champion; MLflow reserves 'latest' and v<number>")]
NOT_FOUND = {401: {"description": "missing or wrong bearer token"}, 404: {"description": "no such model or version"}}


@router.get("", response_model=list[ModelOut], dependencies=[Readable], summary="Registered models")
async def list_models(tracking: TrackingDep,
                      prefix: Annotated[str | None, Query(max_length=256, description="name prefix")] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ModelOut]:
    return await asyncio.to_thread(tracking.models, prefix, limit)


@router.get("/{name}", response_model=ModelDetail, responses=NOT_FOUND, dependencies=[Readable],
            summary="A model's versions, newest first, with their runs' metrics and aliases")
async def show_model(name: ModelName, tracking: TrackingDep) -> ModelDetail:
    return await asyncio.to_thread(tracking.model, name)


@router.put("/{name}/aliases/{alias}", response_model=ModelDetail,
            responses={**NOT_FOUND, 403: {"description": "a viewer's token"}},
            summary="Point an alias (e.g. champion) at a version: promotion (admins and users)")
async def set_alias(name: ModelName, alias: AliasName, request: AliasRequest, tracking: TrackingDep,
                    services: ServicesDep, who: WriterDep) -> ModelDetail:
    if alias == "latest" or (alias[:1] in "vV" and alias[1:].isdigit()):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"alias: {alias!r} is reserved by MLflow; choose another name")
    try:
        model = await asyncio.to_thread(tracking.set_alias, name, alias, request.version)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    services.audit.record(who, "model.alias", f"model {name}", {"alias": alias, "version": request.version})
    return model
