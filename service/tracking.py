"""The API's view of MLflow: a job's run and metrics, registered models, aliases — read through
`training.tracking` (the one module that talks to MLflow), as the response schemas.

The API process stays free of torch: `training.tracking` imports mlflow only inside its functions.
A job's run is found by its stable run name, skipping nested child runs, so a search job maps to its
parent run.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.schemas import ModelDetail, ModelOut, ModelVersionOut
from training import tracking
from training.tracking import NotFound

# The registry routes answer with the response schemas themselves; these names are kept for callers
# (and test doubles) that build them.
ModelView = ModelDetail
VersionView = ModelVersionOut

__all__ = ["ModelView", "NotFound", "RunView", "TrackingReader", "VersionView"]


@dataclass
class RunView:
    run_id: str
    status: str
    metrics: dict[str, float | None]
    start_time: int | None
    end_time: int | None
    step: int | None = None  # the latest step any metric was logged at
    registered_model: str | None = None
    model_version: str | None = None


class TrackingReader:
    """The tracking store at `uri`, as the routes and the supervisor read it (swappable in tests)."""

    def __init__(self, uri: str):
        self.uri = uri

    def warm_up(self) -> None:
        """Create/migrate the store now, so the first request (and `mlflow server`) need not."""
        tracking.open_store(self.uri)

    def find_run_id(self, experiment: str, run_name: str) -> str | None:
        run = tracking.find_run(self.uri, experiment, run_name, top_level=True)
        return run.info.run_id if run is not None else None

    def run(self, run_id: str) -> RunView:
        return RunView(**tracking.run_summary(self.uri, run_id))

    def child_runs(self, run_id: str, status: str | None = None) -> list:
        """The runs nested under `run_id` (a search's trials), oldest first; only `status` ones if given."""
        return tracking.runs_under(self.uri, run_id, status)

    def mark_killed(self, run_id: str) -> None:
        """A cancelled job's run, and its child runs still RUNNING (a search's trials), end KILLED."""
        tracking.end_run(self.uri, run_id, "KILLED")
        for child in self.child_runs(run_id, status="RUNNING"):
            tracking.end_run(self.uri, child.info.run_id, "KILLED")

    def models(self, name_prefix: str | None = None, limit: int = 100) -> list[ModelOut]:
        return [ModelOut.model_validate(model) for model in tracking.registered_models(self.uri, name_prefix, limit)]

    def model(self, name: str) -> ModelDetail:
        return ModelDetail.model_validate(tracking.registered_model(self.uri, name))

    def set_alias(self, name: str, alias: str, version: str) -> ModelDetail:
        tracking.set_alias(self.uri, name, alias, version)
        return self.model(name)
