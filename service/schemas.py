"""Request and response bodies. Submissions wrap the very config types the CLI loads from YAML."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.model_checker import model_problems
from service.store import Job, JobKind, JobState
from service.users import BOOTSTRAP_ADMIN, USER_NAME_PATTERN, Role
from training.config import TrainConfig
from tuning.config import SearchConfig


def _problems_out_of_process(model) -> tuple[str, ...]:
    return model_problems(model.model_dump_json())


class TrainJobConfig(TrainConfig):
    """TrainConfig whose registry check runs in the model-checker process, memoised (same fields,
    same errors): the API process validates configs without importing torch."""

    model_config = ConfigDict(title="TrainConfig")

    @classmethod
    def registry_problems(cls, model) -> tuple[str, ...]:
        return _problems_out_of_process(model)


class SearchJobConfig(SearchConfig):
    """SearchConfig with the same out-of-process, memoised registry check."""

    model_config = ConfigDict(title="SearchConfig")

    @classmethod
    def registry_problems(cls, model) -> tuple[str, ...]:
        return _problems_out_of_process(model)

IdempotencyKey = Field(None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                       description="Resubmitting with the same key returns the job it created (200)")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainJobRequest(_Request):
    config: TrainJobConfig
    idempotency_key: str | None = IdempotencyKey


class SearchJobRequest(_Request):
    config: SearchJobConfig
    idempotency_key: str | None = IdempotencyKey


class JobOut(BaseModel):
    id: int
    kind: JobKind
    name: str
    state: JobState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(description="launches so far; > 1 after a resume")
    runner: str | None
    cancel_requested: bool
    message: str | None = Field(description="why it failed or was cancelled")
    mlflow_run_id: str | None
    registered_model: str | None
    model_version: str | None
    owner: str = Field(description="the user who submitted it")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        values = {name: getattr(job, name) for name in cls.model_fields}
        values["owner"] = job.owner or BOOTSTRAP_ADMIN  # jobs from before owners were recorded
        return cls.model_validate(values)


class JobDetail(JobOut):
    config: dict[str, Any]
    mlflow_status: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict,
                                             description="latest value of each MLflow metric (null: not finite)")
    step: int | None = Field(None, description="the latest step the run logged a metric at (training progress)")


class TrialOut(BaseModel):
    name: str | None
    run_id: str
    status: str = Field(description="the trial's MLflow run status: RUNNING, FINISHED, KILLED, FAILED")
    values: dict[str, str] = Field(description="this trial's values of the searched fields and of the ablation "
                                               "table's axes (as MLflow params)")
    metric: float | None = Field(description="latest value of the search metric (null: none yet, or not finite)")
    epoch: int | None
    stopped_early: bool = Field(description="ASHA stopped it")
    over_budget: bool = Field(description="pruned by the search budget without training")
    complete: bool


class AblationCell(BaseModel):
    value: float | None
    stopped_early: bool
    over_budget: bool
    trials: int
    best: bool


class Ablation(BaseModel):
    row_name: str
    column_name: str
    rows: list[str]
    columns: list[str]
    cells: list[list[AblationCell]] = Field(description="cells[row][column]: the best trial of that pair")


class SearchTrials(BaseModel):
    planned: int | None = Field(description="trials the search runs in all (grid points x samples)")
    metric: str
    mode: str
    trials: list[TrialOut]
    ablation: Ablation


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ModelVersionOut(BaseModel):
    version: str
    run_id: str | None
    status: str
    aliases: list[str]
    created: int | None = Field(description="milliseconds since the epoch")
    metrics: dict[str, float | None]


class ModelOut(BaseModel):
    name: str
    description: str | None
    aliases: dict[str, str] = Field(description="alias -> version")
    latest_versions: list[str]


class ModelDetail(ModelOut):
    versions: list[ModelVersionOut]


class AliasRequest(_Request):
    version: str = Field(pattern=r"^[0-9]{1,9}$", description="the model version the alias points to")


class Health(BaseModel):
    status: str
    warmed_up: bool = Field(description="validation and tracking store are warm (first requests are slower)")
    queued: int
    running: int
    slots: int
    runner: str
    tracking_uri: str
    mlflow_ui: str | None = Field(description="URL of the MLflow UI this service starts, if any (known at once)")
    mlflow_ui_ready: bool = Field(False, description="the MLflow UI answers (its first start takes 20-40 s)")



class UserRequest(_Request):
    name: str = Field(pattern=USER_NAME_PATTERN, description="lower-case letters, digits, . _ -; starts with a letter")
    role: Role = Role.USER


class UserOut(BaseModel):
    name: str
    role: Role
    created_at: datetime
    created_by: str
    token_issued_at: datetime
    revoked_at: datetime | None


class UserWithToken(UserOut):
    token: str = Field(description="shown this once; the service keeps only its SHA-256")


class WhoAmI(BaseModel):
    name: str
    role: Role


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] | None
    reason: str | None


class AuditList(BaseModel):
    items: list[AuditOut]
    total: int
    limit: int
    offset: int
