"""Submissions as YAML: `POST /jobs` and `POST /searches` take the very file `attnlab train|tune` reads.

A body sent as `application/yaml` (or `text/yaml`, `application/x-yaml`) is the config itself; the
middleware turns it into the JSON request `{"config": ..., "idempotency_key": <Idempotency-Key
header>}` before FastAPI sees it, so both formats meet the same typed schema and the same errors.
It also keeps the line of every key, so errors can name the line of the field at fault
(`service/errors.py` adds `line` to each error item). Anchors and aliases are refused: a few bytes
of them can expand into gigabytes once copied out as JSON.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
YAML_ROUTES = ("/jobs", "/searches")
LINES_KEY = "attnlab.yaml_lines"  # scope key: {config path: line}


class YamlError(ValueError):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def parse(text: str) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """The document and the 1-based line of every mapping key and list item, by path."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple[str | int, ...], int] = {}
        if node is not None:
            _index(node, (), lines, set())
        return (loader.construct_document(node) if node is not None else None), lines
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(filter(None, [error.context, error.problem]))
        raise YamlError(f"not valid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
                        if mark else f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise YamlError(f"not valid YAML: {error}") from None
    finally:
        loader.dispose()


def _index(node: yaml.Node, path: tuple, lines: dict, seen: set[int]) -> None:
    if id(node) in seen:  # the same node twice: an alias
        raise YamlError("anchors and aliases (&name, *name) are not accepted; write the values out",
                        node.start_mark.line + 1)
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line))
            lines[child] = key.start_mark.line + 1
            _index(value, child, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _index(item, (*path, index), lines, seen)


def line_of(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest existing key on `loc` (a missing field points at its section)."""
    path = tuple(part for part in loc if part not in ("body", "config", "image", "video"))
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


class YamlBodies:
    """Rewrites YAML submissions to the JSON request; malformed YAML is a 422 naming the line."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in YAML_ROUTES
                and _content_type(scope) in YAML_TYPES):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except HTTPException as error:  # BodySizeLimit, outside us, counted too many bytes
            await JSONResponse({"detail": error.detail, "message": error.detail},
                               status_code=error.status_code)(scope, receive, send)
            return
        try:
            config, lines = parse(body.decode("utf-8"))
            if not isinstance(config, dict):
                raise YamlError(f"expected a mapping of config sections at the top level, got "
                                f"{type(config).__name__}", 1)
        except (UnicodeDecodeError, YamlError) as error:
            line = getattr(error, "line", None)
            message = f"not UTF-8 text ({error})" if isinstance(error, UnicodeDecodeError) else str(error)
            item = {"loc": ["body"], "msg": message, "type": "yaml_invalid", **({"line": line} if line else {})}
            await JSONResponse({"detail": [item], "message": f"body: {message}"}, status_code=422)(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key")
        request = {"config": config, **({"idempotency_key": key.decode("latin-1")} if key else {})}
        payload = json.dumps(request, default=str).encode()
        scope = {**scope, LINES_KEY: lines,
                 "headers": [(name, value) for name, value in scope["headers"]
                             if name not in (b"content-type", b"content-length")]
                 + [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
        await self.app(scope, _replay(payload, receive), send)


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(payload: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        return await receive()

    return replay


def openapi_yaml_body(config_type: type) -> dict:
    """`openapi_extra` of a submit route: the YAML form of its body (the config) and the header that keys it."""
    schema = {"$ref": f"#/components/schemas/{config_type.__name__}"}
    return {"requestBody": {"content": {"application/yaml": {"schema": schema}}},
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "description": "YAML bodies: resubmitting with the same key returns the same job",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                                       "pattern": "^[\\x21-\\x7e]+$"}}]}
