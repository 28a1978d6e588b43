"""/docs and /redoc from files installed with the service: nothing is fetched from a CDN at run time.

The Swagger UI 5 and ReDoc bundles come from the `fastapi-offline` package's static folder (we use
its files, not its app factory). Swagger UI 5 is needed because FastAPI emits OpenAPI 3.1.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static/docs"


def add_local_docs(app: FastAPI) -> None:
    """Call on an app created with docs_url=None, redoc_url=None."""
    app.mount(STATIC_URL, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC_URL}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{STATIC_URL}/favicon.png", with_google_fonts=False)
