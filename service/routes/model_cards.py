"""A registered version's model card: the readable `model_card.md` stored with the model."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse

from service.auth import Readable
from service.deps import TrackingDep
from service.routes.registry import NOT_FOUND, ModelName
from service.tracking import NotFound
from training.model_card import ContractUnreadable

router = APIRouter(prefix="/models", tags=["registry"])

Version = Annotated[str, Path(pattern=r"^[0-9]{1,9}$", description="model version")]


@router.get("/{name}/versions/{version}/card", response_class=PlainTextResponse,
            responses={**NOT_FOUND, 200: {"content": {"text/markdown": {}}}}, dependencies=[Readable],
            summary="The version's model card (Markdown): input, preprocessing, classes, training, metrics")
async def model_card(name: ModelName, version: Version, tracking: TrackingDep) -> PlainTextResponse:
    try:
        card = await asyncio.to_thread(tracking.model_card, name, version)
    except ContractUnreadable as error:  # the version exists, its files cannot be read
        raise NotFound(str(error)) from None
    if card is None:
        raise NotFound(f"model {name!r} version {version} has no model card (it was logged before attnlab "
                       "models carried one)")
    return PlainTextResponse(card, media_type="text/markdown; charset=utf-8")
