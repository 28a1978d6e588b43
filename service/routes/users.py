"""Users and their tokens (admins only), and `GET /users/me` for anyone holding a token."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from service.auth import AdminDep, ReaderDep
from service.deps import ServicesDep
from service.schemas import UserOut, UserRequest, UserWithToken, WhoAmI
from service.users import USER_NAME_PATTERN, UnknownUser, User, UserExists

router = APIRouter(prefix="/users", tags=["users"])

UserName = Annotated[str, Path(pattern=USER_NAME_PATTERN, description="the user's name")]
ADMIN_ONLY = {401: {"description": "missing or wrong bearer token"}, 403: {"description": "not an admin"}}


def _out(user: User, token: str | None = None):
    fields = {name: getattr(user, name) for name in UserOut.model_fields}
    return UserWithToken(**fields, token=token) if token else UserOut(**fields)


@router.get("/me", response_model=WhoAmI, responses={401: ADMIN_ONLY[401]}, summary="Who this token is")
async def who_am_i(who: ReaderDep) -> WhoAmI:
    return WhoAmI(name=who.name, role=who.role)


@router.get("", response_model=list[UserOut], responses=ADMIN_ONLY, summary="Every user (tokens are never shown)")
async def list_users(services: ServicesDep, who: AdminDep) -> list[UserOut]:
    return [_out(user) for user in await asyncio.to_thread(services.users.list)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserWithToken,
             responses={**ADMIN_ONLY, 409: {"description": "the name is taken"}},
             summary="Create a user; the answer carries its token, shown this once")
async def create_user(request: UserRequest, services: ServicesDep, who: AdminDep) -> UserWithToken:
    try:
        user, token = await asyncio.to_thread(services.users.create, request.name, request.role, who.name)
    except UserExists as taken:
        raise HTTPException(status.HTTP_409_CONFLICT, str(taken)) from None
    services.audit.record(who, "user.create", f"user {user.name}", {"role": user.role})
    return _out(user, token)


@router.post("/{name}/token", response_model=UserWithToken, responses={**ADMIN_ONLY, 404: {"description": "no such user"}},
             summary="Give a user a new token (the old one stops working; a revoked user is active again)")
async def issue_token(name: UserName, services: ServicesDep, who: AdminDep) -> UserWithToken:
    try:
        user, token = await asyncio.to_thread(services.users.issue_token, name)
    except UnknownUser as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(unknown)) from None
    services.audit.record(who, "user.token", f"user {name}")
    return _out(user, token)


@router.post("/{name}/revoke", response_model=UserOut, responses={**ADMIN_ONLY, 404: {"description": "no such user"}},
             summary="Revoke a user's token: refused from now on (the user and its jobs stay)")
async def revoke_user(name: UserName, services: ServicesDep, who: AdminDep) -> UserOut:
    try:
        user = await asyncio.to_thread(services.users.revoke, name)
    except UnknownUser as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(unknown)) from None
    services.audit.record(who, "user.revoke", f"user {name}")
    return _out(user)
