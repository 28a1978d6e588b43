"""What the web page shows, computed from the API's own answers (JSON as the API returns it).

Pure functions: a job as a table row (state, attempt, progress, latest metric, model), a job's
detail (facts, progress, metrics, MLflow links) and a search's trials. The templates only lay
these out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
RUNNERS = {"LocalProcessRunner": "local process", "RayJobsRunner": "Ray Jobs"}
PER_CLASS = "/acc_class/"  # test/acc_class/<class>: one metric per class
# Shown first in the table and the detail, in this order, when the run logged them.
HEADLINE_METRICS = ("val/acc", "test/acc", "train/loss", "val/loss")


@dataclass
class Progress:
    text: str  # "epoch 2/3 · step 120/300", "3 of 8 trials", "queued"
    fraction: float | None = None  # 0..1 for the bar; None: unknown


@dataclass
class Row:
    id: int
    kind: str
    name: str
    state: str
    attempts: int
    created: str  # ISO 8601; the page shows it in the viewer's time zone
    created_text: str
    progress: Progress
    metric: str  # "val/acc 0.812", or ""
    model: str  # "se-resnet18 v3", or ""
    finished: bool


@dataclass
class Links:
    run: str | None = None
    model: str | None = None
    version: str | None = None
    model_name: str | None = None
    version_number: str | None = None


@dataclass
class Fact:
    name: str
    value: str
    time: str | None = None  # ISO 8601: the page shows it in the viewer's time zone
    title: str | None = None  # the whole value where `value` is shortened


@dataclass
class Detail:
    row: Row
    facts: list[Fact]
    metrics: list[tuple[str, str]]
    per_class: list[tuple[str, str]]  # test/acc_class/<name>: shown folded
    links: Links
    message: str | None
    trials: dict[str, Any] | None = None  # GET /jobs/{id}/trials, for searches
    trials_problem: str | None = None
    cells: list[list[dict[str, Any]]] = field(default_factory=list)
    may_cancel: bool = False  # the caller's token may cancel this job (shown only while it runs)


def when(value: str | None) -> str:
    """An API timestamp (ISO 8601, UTC) as text; the page's script shows it in local time."""
    if not value:
        return "-"
    return value[:19].replace("T", " ") + " UTC"


def duration(job: dict[str, Any]) -> str:
    if not job.get("started_at"):
        return "-"
    start = datetime.fromisoformat(job["started_at"])
    end = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else datetime.now(UTC)
    seconds = max(0, int((end - start).total_seconds()))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(value: float | None) -> str:
    if value is None:
        return "nan"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def headline_metric(metrics: dict[str, float | None]) -> str:
    for name in HEADLINE_METRICS:
        if name in metrics:
            return f"{name} {_number(metrics[name])}"
    return ""


def progress(job: dict[str, Any], detail: dict[str, Any] | None, trials: dict[str, Any] | None) -> Progress:
    """Where a job is: epochs and steps of a training run (from its MLflow run), trials of a search."""
    state = job["state"]
    if state == "QUEUED":
        return Progress("queued")
    if job["kind"] == "search" and trials is not None:
        done = sum(trial["status"] != "RUNNING" for trial in trials["trials"])
        planned = trials.get("planned")
        text = f"{done} of {planned} trials" if planned else f"{done} trials"
        return Progress(text + (f", {len(trials['trials']) - done} running" if state == "RUNNING" else ""),
                        done / planned if planned else None)
    if detail is None or not detail.get("metrics"):
        if state == "RUNNING":
            return Progress("starting")
        return Progress(f"took {duration(job)}" if job.get("started_at") else "never started")
    trainer = (detail.get("config") or {}).get("trainer") or {}
    epoch, step = detail["metrics"].get("epoch"), detail.get("step")
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps") or -1
    parts = []
    if epoch is not None:  # Lightning logs the 0-based epoch, and max_epochs once training is over
        shown = min(int(epoch) + 1, max_epochs) if max_epochs and max_epochs > 0 else int(epoch) + 1
        parts.append(f"epoch {shown}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""))
    if step is not None:
        parts.append(f"step {step}" + (f"/{max_steps}" if max_steps > 0 else ""))
    fraction = None
    if state in FINISHED:
        fraction = 1.0 if state == "SUCCEEDED" else None
    elif max_steps > 0 and step is not None:
        fraction = min(1.0, step / max_steps)
    elif max_epochs and max_epochs > 0 and epoch is not None:
        fraction = min(1.0, int(epoch) / max_epochs)
    return Progress(" · ".join(parts) or state.lower(), fraction)


def row(job: dict[str, Any], detail: dict[str, Any] | None = None, trials: dict[str, Any] | None = None) -> Row:
    model = f"{job['registered_model']} v{job['model_version']}" if job.get("model_version") else ""
    return Row(id=job["id"], kind=job["kind"], name=job["name"], state=job["state"], attempts=job["attempts"],
               created=job["created_at"], created_text=when(job["created_at"]), progress=progress(job, detail, trials),
               metric=headline_metric(detail.get("metrics") or {}) if detail else "", model=model,
               finished=job["state"] in FINISHED)


def links(job: dict[str, Any], mlflow_ui: str | None) -> Links:
    """Addresses in the MLflow UI (its hash routes): the run, the registered model and version."""
    if not mlflow_ui:
        return Links()
    base = mlflow_ui.rstrip("/") + "/#"
    found = Links()
    if job.get("mlflow_run_id"):
        found.run = f"{base}/runs/{job['mlflow_run_id']}"
    if job.get("registered_model"):
        found.model_name = job["registered_model"]
        name = quote(found.model_name, safe="")
        found.model = f"{base}/models/{name}"
        if job.get("model_version"):
            found.version_number = str(job["model_version"])
            found.version = f"{base}/models/{name}/versions/{quote(found.version_number, safe='')}"
    return found


def may_cancel(job: dict[str, Any], me: dict[str, Any] | None) -> bool:
    """Whether the caller (GET /users/me) may cancel the job: an admin any, a user its own, a viewer none."""
    if me is None:
        return False
    return me["role"] == "admin" or (me["role"] == "user" and me["name"] == job.get("owner"))


def detail(job: dict[str, Any], mlflow_ui: str | None, trials: dict[str, Any] | None = None,
           trials_problem: str | None = None, me: dict[str, Any] | None = None) -> Detail:
    run_id = job.get("mlflow_run_id")
    facts = [Fact("kind", job["kind"]), Fact("owner", job.get("owner") or "-"), Fact("attempt", str(job["attempts"])),
             Fact("runner", RUNNERS.get(job.get("runner") or "", job.get("runner") or "-")),
             Fact("duration", duration(job)),
             *[Fact(name, when(job.get(key)), time=job.get(key))
               for name, key in (("created", "created_at"), ("started", "started_at"), ("finished", "finished_at"))],
             Fact("MLflow status", job.get("mlflow_status") or "-"),
             Fact("MLflow run", f"{run_id[:12]}…" if run_id else "-", title=run_id),
             Fact("model", f"{job['registered_model']} v{job['model_version']}" if job.get("model_version") else "-")]
    metrics = job.get("metrics") or {}
    ordered = [name for name in HEADLINE_METRICS if name in metrics] + sorted(
        name for name in metrics if name not in HEADLINE_METRICS and name != "epoch" and PER_CLASS not in name)
    per_class = sorted(name for name in metrics if PER_CLASS in name)
    return Detail(row=row(job, job, trials), facts=facts, metrics=[(name, _number(metrics[name])) for name in ordered],
                  per_class=[(name.split(PER_CLASS, 1)[1], _number(metrics[name])) for name in per_class],
                  links=links(job, mlflow_ui), message=job.get("message"), trials=trials,
                  trials_problem=trials_problem,
                  cells=(trials or {}).get("ablation", {}).get("cells", []), may_cancel=may_cancel(job, me))


def trial_label(name: str | None, search: str) -> str:
    """A trial's run name without the search's name in front (`<search>-<trial id>`)."""
    return (name or "-").removeprefix(f"{search}-")


def cell_text(cell: dict[str, Any]) -> str:
    """An ablation cell as tuning/report.py writes it: value (* = stopped early), over budget, or —."""
    if cell.get("value") is not None:
        return f"{cell['value']:.4f}" + ("*" if cell.get("stopped_early") else "")
    return "over budget" if cell.get("over_budget") else "—"
