"""The audit log (admins only): every mutating action, and every refused one, newest first."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from service.auth import AdminDep
from service.deps import ServicesDep
from service.routes.users import ADMIN_ONLY
from service.schemas import AuditList, AuditOut

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=AuditList, responses=ADMIN_ONLY, summary="Who did what, when (newest first)")
async def audit_log(services: ServicesDep, who: AdminDep,
                    actor: Annotated[str | None, Query(max_length=64, description="user name")] = None,
                    action: Annotated[str | None, Query(max_length=32, description="e.g. job.cancel")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> AuditList:
    page = await asyncio.to_thread(services.audit.list, actor=actor, action=action, limit=limit, offset=offset)
    items = [AuditOut.model_validate({name: getattr(entry, name) for name in AuditOut.model_fields})
             for entry in page.items]
    return AuditList(items=items, total=page.total, limit=limit, offset=offset)
