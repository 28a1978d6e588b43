"""Which HTTP methods a path takes: `OPTIONS` answers with all of them, and so does every 405.

Starlette matches one route per (path, method) and, on a method it does not take, answers with the
`Allow` header of the first route on that path only: `GET /jobs` and `POST /jobs` are two routes,
so `OPTIONS /jobs` used to say `Allow: POST`.
"""

from __future__ import annotations

from functools import lru_cache

from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def allowed_methods(scope: Scope) -> list[str]:
    """The methods the published API takes on the request's path, plus OPTIONS; [] for other paths.

    Read from the OpenAPI document (what clients are told), not from the router's internals."""
    methods = {method for pattern, methods in _path_patterns(scope["app"]) if pattern.match(scope["path"])
               for method in methods}
    return sorted(methods | {"OPTIONS"}) if methods else []


def _path_patterns(app) -> tuple:
    return _compiled(id(app.openapi()), app)


@lru_cache(maxsize=8)
def _compiled(_schema_id: int, app) -> tuple:
    patterns = []
    for path, operations in app.openapi()["paths"].items():
        methods = {method.upper() for method in operations if method in HTTP_METHODS}
        if "GET" in methods:
            methods.add("HEAD")
        patterns.append((compile_path(path)[0], frozenset(methods)))
    return tuple(patterns)


class AnswerOptions:
    """`OPTIONS <path>` -> 204 with `Allow` listing the path's methods (404 as before for unknown paths)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            methods = allowed_methods(scope)
            if methods:
                await Response(status_code=204, headers={"Allow": ", ".join(methods)})(scope, receive, send)
                return
        await self.app(scope, receive, send)
