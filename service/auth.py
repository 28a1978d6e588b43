"""Who is calling, and may they: the bearer token -> a Principal (service/users.py), and role checks.

Routes take the caller as a parameter: `who: ReaderDep` (any valid token; no token at all when
ATTNLAB_OPEN_READS is set, as the viewer `anonymous`), `who: WriterDep` (an admin or a user) or
`who: AdminDep`. Missing or refused tokens are 401; a valid token whose role may not do the thing
is 403, recorded in the audit log. Token checks run inline on the event loop: the service token is
compared in constant time without a database read, a user token costs one indexed lookup.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.deps import Services, ServicesDep
from service.users import BOOTSTRAP_ADMIN, Principal, Role, TokenRefused

ANONYMOUS = Principal("anonymous", Role.VIEWER)
bearer = HTTPBearer(auto_error=False, description="your token (`attnlab users create`), or the service token "
                                                  "(ATTNLAB_TOKEN or $ATTNLAB_HOME/token), which is the admin's")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def identify(services: Services, credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
    """The caller of a request; None without a token; 401 for a token nobody holds (or a revoked one)."""
    if credentials is None:
        return None
    if credentials.scheme.lower() != "bearer":
        raise _unauthorized("expected `Authorization: Bearer <token>`")
    token = credentials.credentials
    if secrets.compare_digest(token.encode(), services.token.encode()):
        return Principal(BOOTSTRAP_ADMIN, Role.ADMIN)
    try:
        return services.users.authenticate(token)
    except TokenRefused as refused:
        raise _unauthorized(str(refused)) from None


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def reader(services: ServicesDep, credentials: Credentials) -> Principal:
    who = identify(services, credentials)
    if who is not None:
        return who
    if services.settings.open_reads:
        return ANONYMOUS
    raise _unauthorized("missing bearer token (Authorization header); reads need a token unless "
                        "ATTNLAB_OPEN_READS is set")


def _signed_in(services, credentials) -> Principal:
    who = identify(services, credentials)
    if who is None:
        raise _unauthorized("missing bearer token (Authorization header)")
    return who


async def writer(services: ServicesDep, credentials: Credentials) -> Principal:
    who = _signed_in(services, credentials)
    if not who.may_write:
        raise deny(services, who, "write", "service", f"role {who.role.value!r} can only read")
    return who


async def admin(services: ServicesDep, credentials: Credentials) -> Principal:
    who = _signed_in(services, credentials)
    if not who.is_admin:
        raise deny(services, who, "admin", "service", f"only admins may do this; {who.name!r} is a {who.role.value}")
    return who


def deny(services: Services, who: Principal, action: str, target: str, reason: str,
         code: int = status.HTTP_403_FORBIDDEN) -> HTTPException:
    """Record a refused action in the audit log; returns the HTTP error to raise."""
    services.audit.record(who, action, target, denied=reason)
    return HTTPException(code, reason)


ReaderDep = Annotated[Principal, Depends(reader)]
Readable = Depends(reader)  # for read routes that need no principal: `dependencies=[Readable]`
WriterDep = Annotated[Principal, Depends(writer)]
AdminDep = Annotated[Principal, Depends(admin)]
