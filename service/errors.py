"""Every error leaves as a 4xx JSON body whose message names the field; nothing leaks a traceback.

Bodies look like FastAPI's own validation errors — `{"detail": [{"loc": [...], "msg": ..., "type": ...}],
"message": "config.data.root: ..."}` — so clients parse one shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datamodules.config import DATA_KINDS
from service.configs import ConfigRejected
from service.methods import allowed_methods
from service.store import IdempotencyConflict
from service.yaml_body import LINES_KEY, line_of
from training.tracking import NotFound

log = logging.getLogger("attnlab.service")
FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _field_errors(status_code: int, errors: list[dict], yaml_lines: dict | None = None) -> JSONResponse:
    """`yaml_lines` (a YAML submission's key lines): each item also gets the `line` of its field."""
    detail = [{"loc": [str(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
              for error in errors]
    if yaml_lines is not None:
        for item, error in zip(detail, errors):
            if (line := line_of(yaml_lines, tuple(error["loc"]))) is not None:
                item["line"] = line
    message = "; ".join(f"{'.'.join(_shown(item['loc']))}: {item['msg']}"
                        + (f" (line {item['line']})" if "line" in item else "") for item in detail)
    return JSONResponse({"detail": detail, "message": message}, status_code=status_code)


def _shown(loc: list[str]) -> list[str]:
    # "body" is transport (but names the place when nothing inside it is at fault), and discriminated
    # unions add their tag ("image") to the path.
    if loc[:1] != ["body"]:
        return loc
    return [part for part in loc[1:] if part not in DATA_KINDS] or ["body"]


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")


def _readable(item: dict) -> dict:
    """pydantic's error item with the union-tag jargon replaced by the field and its allowed values."""
    loc, message, kind = tuple(item.get("loc", ())), _clean(str(item.get("msg", ""))), item.get("type", "")
    if kind == "union_tag_invalid":
        context = item.get("ctx", {})
        loc += (str(context.get("discriminator", "kind")).strip("'").removesuffix("()"),)
        message = f"{context.get('tag')!r} is not one of {str(context.get('expected_tags', '')).replace(chr(39), '')}"
    return {"loc": loc, "msg": message, "type": kind}


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return _field_errors(status.HTTP_422_UNPROCESSABLE_CONTENT, [_readable(item) for item in error.errors()],
                         request.scope.get(LINES_KEY))


async def _config_rejected(request: Request, error: ConfigRejected) -> JSONResponse:
    errors = [{"loc": ("body", "config", *error.loc), "msg": error.message, "type": "config_rejected"}]
    return _field_errors(status.HTTP_422_UNPROCESSABLE_CONTENT, errors, request.scope.get(LINES_KEY))


async def _conflict(_request: Request, error: IdempotencyConflict) -> JSONResponse:
    errors = [{"loc": ("body", "idempotency_key"), "msg": str(error), "type": "idempotency_conflict"}]
    return _field_errors(status.HTTP_409_CONFLICT, errors)


async def _not_found(_request: Request, error: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(error), "message": str(error)}, status_code=status.HTTP_404_NOT_FOUND)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == status.HTTP_400_BAD_REQUEST and error.detail == FASTAPI_BODY_ERROR:
        # FastAPI's answer to a body it could not decode (e.g. not UTF-8): a 422 like every other bad body.
        cause = error.__cause__
        problem = f"not a UTF-8 JSON document ({type(cause).__name__}: {cause})" if cause else "not a JSON document"
        errors = [{"loc": ("body",), "msg": problem, "type": "body_undecodable"}]
        return _field_errors(status.HTTP_422_UNPROCESSABLE_CONTENT, errors)
    headers = error.headers
    if error.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and (methods := allowed_methods(request.scope)):
        headers = {**(headers or {}), "Allow": ", ".join(methods)}
    return JSONResponse({"detail": error.detail, "message": str(error.detail)}, status_code=error.status_code,
                        headers=headers)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    message = f"internal error ({type(error).__name__}); see the service log"
    return JSONResponse({"detail": message, "message": message}, status_code=500)


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ConfigRejected, _config_rejected)
    app.add_exception_handler(IdempotencyConflict, _conflict)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Exception, _unexpected)


class BodySizeLimit:
    """413 for bodies over `max_bytes`: declared (Content-Length) or counted while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (ATTNLAB_MAX_REQUEST_BYTES)"

    async def _reject(self, send: Send) -> None:
        response = JSONResponse({"detail": self._message(), "message": self._message()},
                                status_code=status.HTTP_413_CONTENT_TOO_LARGE)
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
