"""`attnlab serve` and `attnlab jobs {submit,list,show,logs,cancel}`: the service and its CLI client.

The client finds the service through ATTNLAB_URL (default http://127.0.0.1:8000) and authenticates
with ATTNLAB_TOKEN, else the token file `attnlab serve` keeps in $ATTNLAB_HOME/token. Only light
modules are imported at top level: `attnlab jobs list` never loads torch or FastAPI.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

PIPED_WIDTH = 400  # columns of piped output: room for the longest name (128) and a run id (32) on one line
STATE_STYLES = {"QUEUED": "cyan", "RUNNING": "yellow", "SUCCEEDED": "green", "FAILED": "red",
                "CANCELLED": "magenta"}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the REST API (and the MLflow UI on the embedded store)",
                                  description="Run the attnlab REST API under uvicorn. Settings come from "
                                              "ATTNLAB_* environment variables (service/settings.py).")
    serve.add_argument("--host", help="interface to bind (ATTNLAB_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (ATTNLAB_PORT, default 8000)")
    serve.add_argument("--slots", type=int, help="jobs running at once (ATTNLAB_SLOTS); 0 = queue only")
    serve.add_argument("--no-mlflow-ui", action="store_true", help="don't start the MLflow UI")
    serve.set_defaults(func=run_serve)

    jobs = subparsers.add_parser("jobs", help="submit, list, follow and cancel jobs of a running service")
    jobs.add_argument("--url", help="service URL (ATTNLAB_URL)")
    jobs.add_argument("--token", help="bearer token (ATTNLAB_TOKEN; default: $ATTNLAB_HOME/token)")
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    submit = actions.add_parser("submit", help="submit a training job (or --search) from a YAML config")
    submit.add_argument("--config", required=True, type=Path, help="YAML config, as for `attnlab train`")
    kind = submit.add_mutually_exclusive_group()
    kind.add_argument("--search", action="store_true", help="the config has a search: section (attnlab tune)")
    kind.add_argument("--evaluation", action="store_true",
                      help="the config is an evaluation config (attnlab evaluate --config)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    submit.add_argument("-f", "--follow", action="store_true", help="then stream its logs until it ends")
    submit.set_defaults(func=run_submit)

    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--state", choices=list(STATE_STYLES))
    listing.add_argument("--kind", choices=["train", "search", "data_check", "evaluate"])
    listing.add_argument("--name", help="run-name prefix")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="one job: state, timestamps, MLflow run, metrics, model version")
    show.add_argument("job_id", type=int)
    show.set_defaults(func=run_show)

    logs = actions.add_parser("logs", help="print a job's log")
    logs.add_argument("job_id", type=int)
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends")
    logs.set_defaults(func=run_logs)

    cancel = actions.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(func=run_cancel)


# ---- serve ------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from service.access_log import BatchedAccessLog
    from service.app import create_app
    from service.settings import Settings

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port), ("slots", args.slots))
                 if value is not None}
    if args.no_mlflow_ui:
        overrides["mlflow_ui"] = False
    settings = Settings(**overrides)
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                            access_log=settings.access_log, timeout_graceful_shutdown=5)
    # uvicorn.Config configured its loggers; the access log's writes move off the event loop.
    access_log = BatchedAccessLog(logging.getLogger("uvicorn.access")).start()
    try:
        uvicorn.Server(config).run()
    finally:
        access_log.stop()
    return 0


# ---- client -----------------------------------------------------------------------------------


def _client(args: argparse.Namespace):
    from service.client import Client
    from service.settings import Settings

    settings = Settings()
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    token_file = settings.home / "token"
    if token is None and token_file.exists():
        token = token_file.read_text().strip()
    return Client(args.url or settings.service_url, token)


def _console():
    """(stdout, stderr) consoles; piped or captured output is not squeezed into 80 columns."""
    from rich.console import Console

    out, err = Console(), Console(stderr=True)
    return (out if out.is_terminal else Console(width=PIPED_WIDTH),
            err if err.is_terminal else Console(stderr=True, width=PIPED_WIDTH))


def _guarded(run):
    """Service errors become one red line and exit code 1 (no traceback)."""

    def wrapper(args: argparse.Namespace) -> int:
        from service.client import ServiceError

        try:
            return run(args)
        except ServiceError as error:
            _console()[1].print(f"[red]error:[/red] {error}", highlight=False)
            return 1

    wrapper.__name__ = run.__name__
    return wrapper


@_guarded
def run_submit(args: argparse.Namespace) -> int:
    from training.config import ConfigError, read_raw_config

    out, err = _console()
    try:
        raw = read_raw_config(args.config, args.overrides)  # errors name the file, as `attnlab train` does
    except (OSError, ConfigError) as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    client = _client(args)
    job = client.submit(raw, search=args.search, evaluation=args.evaluation, idempotency_key=args.idempotency_key)
    kind = "search" if args.search else "evaluation" if args.evaluation else "training job"
    out.print(f"Submitted {kind} [bold]{job['id']}[/bold] ({job['name']}): {_state(job['state'])}")
    if not args.follow:
        out.print(f"Follow it with: attnlab jobs logs {job['id']} -f", style="dim")
        return 0
    return _follow(client, job["id"], out)


@_guarded
def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    out, _ = _console()
    page = _client(args).jobs(state=args.state, kind=args.kind, name=args.name, limit=args.limit,
                              offset=args.offset)
    table = Table(box=None, header_style="bold")
    for column in ("ID", "KIND", "NAME", "STATE", "ATTEMPTS", "CREATED", "DURATION", "MLFLOW RUN", "MODEL", "OWNER"):
        # A narrow terminal folds long names and run ids onto more lines rather than cutting them off.
        table.add_column(column, no_wrap=column in ("ID", "STATE", "CREATED"), overflow="fold")
    for job in page["items"]:
        model = f"{job['registered_model']} v{job['model_version']}" if job["model_version"] else ""
        table.add_row(str(job["id"]), job["kind"], job["name"], _state(job["state"]), str(job["attempts"]),
                      _time(job["created_at"]), _duration(job), job["mlflow_run_id"] or "", model, job["owner"])
    out.print(table)
    shown = len(page["items"])
    out.print(f"{shown} of {page['total']} jobs" + (f" (from {args.offset})" if args.offset else ""), style="dim")
    return 0


@_guarded
def run_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    out, _ = _console()
    job = _client(args).job(args.job_id)
    facts = Table(box=None, show_header=False)
    facts.add_column(style="bold")
    facts.add_column()
    rows = [("id", str(job["id"])), ("kind", job["kind"]), ("name", job["name"]), ("owner", job["owner"]),
            ("state", _state(job["state"])),
            ("attempts", str(job["attempts"])), ("created", _time(job["created_at"])),
            ("started", _time(job["started_at"])), ("finished", _time(job["finished_at"])),
            ("duration", _duration(job)), ("mlflow run", job["mlflow_run_id"] or "-"),
            ("mlflow status", job.get("mlflow_status") or "-"),
            ("model", f"{job['registered_model']} version {job['model_version']}" if job["model_version"] else "-")]
    if job["message"]:
        rows.append(("message", job["message"]))
    for key, value in rows:
        facts.add_row(key, value)
    out.print(facts)
    if job.get("metrics"):
        metrics = Table(title="metrics (latest)", title_justify="left", box=None, header_style="bold")
        metrics.add_column("METRIC")
        metrics.add_column("VALUE", justify="right")
        for name, value in sorted(job["metrics"].items()):
            metrics.add_row(name, "nan" if value is None else f"{value:.4g}")
        out.print(metrics)
    return 0


@_guarded
def run_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.follow:
        return _follow(client, args.job_id, _console()[0])
    for chunk in client.logs(args.job_id):
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    return 0


@_guarded
def run_cancel(args: argparse.Namespace) -> int:
    out, _ = _console()
    job = _client(args).cancel(args.job_id)
    out.print(f"Job [bold]{job['id']}[/bold]: {_state(job['state'])}")
    return 0


def _follow(client, job_id: int, out) -> int:
    """Stream the log until the job ends; exit code 0 only for SUCCEEDED."""
    for chunk in client.logs(job_id, follow=True):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    job = client.job(job_id)
    out.print(f"Job [bold]{job_id}[/bold] {_state(job['state'])}"
              + (f" (model {job['registered_model']} version {job['model_version']})" if job["model_version"] else ""))
    return 0 if job["state"] == "SUCCEEDED" else 1


def _state(state: str) -> str:
    return f"[{STATE_STYLES.get(state, 'white')}]{state}[/]"


def _time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(job: dict) -> str:
    if not job.get("started_at"):
        return "-"
    start = datetime.fromisoformat(job["started_at"])
    end = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else datetime.now(start.tzinfo)
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
