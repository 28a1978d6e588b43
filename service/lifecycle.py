"""Starting and stopping the service's parts: job store, runner, supervisor, MLflow store and UI.

Order matters on a fresh embedded store: the API process creates (migrates) the MLflow SQLite
store first, then `mlflow server` starts on it, and only then does the supervisor launch jobs,
so no two processes ever migrate one SQLite file at once. Requests are served from the start:
submissions queue while the store warms up.
"""

from __future__ import annotations

import gc
import logging
import threading

from service.audit import AuditLog
from service.deps import Services
from service.model_checker import CHECKER
from service.mlflow_ui import MlflowUI
from service.routes.health import redact
from service.runners import make_runner
from service.settings import Settings
from service.store import JobStore
from service.supervisor import Supervisor
from service.tracking import TrackingReader
from service.users import UserStore
from training.config import ModelConfig

log = logging.getLogger("attnlab.service")


def say(message: str) -> None:
    print(message, flush=True)


def start_services(settings: Settings) -> Services:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    CHECKER.idle_seconds = settings.model_checker_idle_seconds or None
    store = JobStore(settings.database_url)
    tracking = TrackingReader(settings.tracking_uri)
    tracking_ready = threading.Event()
    ui = MlflowUI(settings) if settings.embedded_tracking and settings.mlflow_ui else None
    supervisor = Supervisor(settings, store, make_runner(settings), tracking, ready=tracking_ready.is_set,
                            mlflow_ui_url=ui.url if ui else None)
    services = Services(settings=settings, store=store, supervisor=supervisor, tracking=tracking,
                        token=settings.bearer_token(), users=UserStore(store.engine), audit=AuditLog(store.engine),
                        mlflow_ui=ui, mlflow_ui_url=ui.url if ui else None)
    token_source = "ATTNLAB_TOKEN" if settings.token else str(settings.home / "token")
    say(f"attnlab API: {settings.service_url}  (web page {settings.service_url}/, docs {settings.service_url}/docs; "
        f"admin token from {token_source}{'; reads open to anyone' if settings.open_reads else ''})")
    say(f"MLflow tracking: {redact(settings.tracking_uri)}")
    if ui is not None:
        say(f"MLflow UI: {ui.url}  (starting: the first start takes 20-40 s)")
        if ui.exposure_warning():
            say(ui.exposure_warning())
    if ui is not None:
        # Migrate the store before `mlflow server` opens it; both in this (main) thread, which
        # lives as long as the service, so the UI's parent-death signal fires only when we exit.
        _warm_up(tracking, settings)
        ui.start()
        tracking_ready.set()

    def prepare_tracking() -> None:
        _warm_up_validation()
        if ui is None:
            _warm_up(tracking, settings)
            tracking_ready.set()
        gc.freeze()
        services.warmed_up.set()
        if ui is not None and ui.wait_ready():
            say(f"MLflow UI ready: {ui.url}")
        elif ui is not None:
            say(f"MLflow UI did not start; see {ui.log_path}")

    # Objects from imports and warm-up never die: frozen, full collections need not scan them again
    # (a full collection over the ~320k objects of MLflow, FastAPI and SQLAlchemy took ~300 ms on
    # two busy cores, stalling every request in flight).
    gc.freeze()
    threading.Thread(target=prepare_tracking, name="attnlab-tracking", daemon=True).start()
    supervisor.start()
    return services


def _warm_up_validation() -> None:
    """Start the model-checker process (it imports torch) now, so the first submission need not."""
    from service.model_checker import model_problems

    try:
        model_problems(ModelConfig(family="none", backbone="resnet18_small").model_dump_json())
    except Exception:  # it is started again on the first submission
        log.exception("the model checker did not start")


def _warm_up(tracking: TrackingReader, settings: Settings) -> None:
    try:
        tracking.warm_up()
    except Exception:  # an unreachable external server: jobs still run and report their own errors
        log.exception("could not open the MLflow tracking store %s", redact(settings.tracking_uri))


def stop_services(services: Services) -> None:
    """Stop supervising and the UI; running jobs keep running and are re-adopted on the next start."""
    services.supervisor.stop()
    services.supervisor.runner.close()
    if services.mlflow_ui is not None:
        services.mlflow_ui.stop()
    services.store.close()
    CHECKER.close()
