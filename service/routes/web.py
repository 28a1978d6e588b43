"""The web page at `/`: jobs and searches, live progress and logs, trials, MLflow links, submit, cancel.

Server-rendered (Jinja templates and static files shipped in `service/web/`, nothing from a CDN).
Every figure on the page comes from the API itself, called in-process (httpx's ASGI transport)
with the browser's own `Authorization` header: whatever the API lets a token read, the page shows,
and nothing else. A navigation carries no token, so `/` is rendered with the jobs when reads are
open and as an empty shell otherwise; the page's script then fetches the same fragments
(`/ui/jobs`, `/ui/jobs/{id}`) with the token the user signed in with (kept in sessionStorage).
Any user's token signs in: a user sees its own jobs, a viewer and an admin everyone's (service/auth.py).
A job's Cancel button is shown only to a caller who may cancel it (`GET /users/me`), and the script
hides Submit from a viewer. Submitting and cancelling go straight to the API from the browser.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import Annotated, Any

import httpx
import jinja2
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.deps import ServicesDep
from service.routes.health import redact
from service.routes.jobs import JobId
from service.store import JobKind, JobState
from service.web import views

router = APIRouter(include_in_schema=False)
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("service.web", "templates"), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters["cell"] = views.cell_text
TEMPLATES.filters["trial"] = views.trial_label
STATIC_URL = "/static/web"
API_PAGE = 500  # GET /jobs's largest page
MAX_ROWS = 1000
LIVE_ROWS = 20  # running jobs whose progress the table shows (each costs one MLflow read)
# The page and its fragments load nothing from elsewhere: a CDN or inline script would be refused.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

Kind = Annotated[JobKind | None, Query(description="train or search")]
State = Annotated[JobState | None, Query()]
Rows = Annotated[int, Query(ge=1, le=MAX_ROWS)]


def add_web(app: FastAPI) -> None:
    app.mount(STATIC_URL, StaticFiles(directory=str(files("service.web") / "static")), name="web-static")
    app.include_router(router)


async def close_web(app: FastAPI) -> None:
    client = getattr(app.state, "web_api_client", None)
    if client is not None:
        await client.aclose()


class Api:
    """GETs to this app's own API, in-process, as the browser's request would make them."""

    def __init__(self, request: Request):
        self._client: httpx.AsyncClient = _client(request.app)
        authorization = request.headers.get("authorization")
        self._headers = {"Authorization": authorization} if authorization else {}

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        response = await self._client.get(path, params={k: v for k, v in params.items() if v is not None},
                                          headers=self._headers)
        return response.status_code, response.json()


def _client(app: FastAPI) -> httpx.AsyncClient:
    client = getattr(app.state, "web_api_client", None)
    if client is None:
        client = app.state.web_api_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                              base_url="http://attnlab.internal", timeout=30)
    return client


async def job_rows(api: Api, kind: JobKind | None, state: JobState | None, limit: int) -> tuple[int, dict]:
    """(status, {rows, total, shown}) of the newest `limit` jobs; running ones with live progress."""
    items: list[dict] = []
    total = 0
    while len(items) < limit:
        status, page = await api.get("/jobs", kind=kind and kind.value, state=state and state.value,
                                     limit=min(API_PAGE, limit - len(items)), offset=len(items))
        if status != 200:
            return status, {"message": page.get("message", "")}
        items += page["items"]
        total = page["total"]
        if len(page["items"]) < page["limit"]:
            break
    running = [job for job in items if job["state"] == "RUNNING"][:LIVE_ROWS]
    live = dict(zip([job["id"] for job in running], await asyncio.gather(*(_live(api, job) for job in running))))
    rows = [views.row(job, *live.get(job["id"], (None, None))) for job in items]
    return 200, {"rows": rows, "total": total, "shown": len(rows)}


async def _live(api: Api, job: dict) -> tuple[dict | None, dict | None]:
    """(GET /jobs/{id}, GET /jobs/{id}/trials for searches); None where the API had none."""
    if job["kind"] == JobKind.SEARCH.value:
        status, trials = await api.get(f"/jobs/{job['id']}/trials")
        return None, trials if status == 200 else None
    status, detail = await api.get(f"/jobs/{job['id']}")
    return (detail if status == 200 else None), None


def mlflow_ui(services) -> str | None:
    """The MLflow UI to link to: the one `serve` started, else an http(s) tracking server."""
    if services.mlflow_ui_url:
        return services.mlflow_ui_url
    uri = services.settings.tracking_uri
    return redact(uri) if uri.startswith(("http://", "https://")) and "@" not in uri else None


def _html(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(template).render(static=STATIC_URL, **context),
                        status_code=status_code, headers=HEADERS)


@router.get("/", response_class=HTMLResponse)
async def page(request: Request, services: ServicesDep, kind: Kind = None, state: State = None,
               limit: Rows = MAX_ROWS) -> HTMLResponse:
    status, listing = await job_rows(Api(request), kind, state, limit)
    return _html("index.html", listing=listing if status == 200 else None, kind=kind and kind.value,
                 state=state and state.value, limit=limit, mlflow_ui=mlflow_ui(services),
                 states=[s.value for s in JobState], needs_token=status == 401)


@router.get("/ui/jobs", response_class=HTMLResponse)
async def jobs_fragment(request: Request, kind: Kind = None, state: State = None,
                        limit: Rows = MAX_ROWS) -> HTMLResponse:
    status, listing = await job_rows(Api(request), kind, state, limit)
    if status != 200:
        return _html("_problem.html", status, message=listing["message"])
    return _html("_rows.html", listing=listing)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job_fragment(job_id: JobId, request: Request, services: ServicesDep) -> HTMLResponse:
    api = Api(request)
    (status, job), (me_status, me) = await asyncio.gather(api.get(f"/jobs/{job_id}"), api.get("/users/me"))
    if status != 200:
        return _html("_problem.html", status, message=job.get("message", ""))
    trials, problem = None, None
    if job["kind"] == JobKind.SEARCH.value:
        trials_status, answer = await api.get(f"/jobs/{job_id}/trials")
        trials, problem = (answer, None) if trials_status == 200 else (None, answer.get("message"))
    return _html("_detail.html", detail=views.detail(job, mlflow_ui(services), trials, problem,
                                                     me if me_status == 200 else None))
