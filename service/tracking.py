"""Read-only views of MLflow for the API: a job's run and metrics, registered models, aliases.

The API process talks to the tracking store with MlflowClient only (no torch). A job's run is found
by its stable run name (training tags it `attnlab.run_name`; MLflow's run name is the fallback),
skipping nested child runs, so a search job maps to its parent run.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from training.tracking import RUN_NAME_TAG


class NotFound(LookupError):
    """No such registered model or version; the message says which."""


@dataclass
class RunView:
    run_id: str
    status: str
    metrics: dict[str, float | None]
    start_time: int | None
    end_time: int | None
    registered_model: str | None = None
    model_version: str | None = None


@dataclass
class VersionView:
    version: str
    run_id: str | None
    status: str
    aliases: list[str]
    created: int | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    contract: dict | None = None  # what the model takes and answers (training/model_card.py); None: none stored


@dataclass
class ModelView:
    name: str
    description: str | None
    aliases: dict[str, str]
    latest_versions: list[str]
    versions: list[VersionView] = field(default_factory=list)


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics as JSON can carry them: NaN and infinities become null."""
    return {name: value if math.isfinite(value) else None for name, value in metrics.items()}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class TrackingReader:
    """One MlflowClient per tracking URI, created on first use (it may create the SQLite store)."""

    def __init__(self, uri: str):
        self.uri = uri
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            return self._client

    def warm_up(self) -> None:
        """Create/migrate the store now, so the first request (and `mlflow server`) need not."""
        self.client.search_experiments(max_results=1)

    # ---- runs -------------------------------------------------------------------------------

    def find_run_id(self, experiment: str, run_name: str) -> str | None:
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return None
        for condition in (f"tags.`{RUN_NAME_TAG}` = {_quote(run_name)}",
                          f"attributes.run_name = {_quote(run_name)}"):
            runs = self.client.search_runs([found.experiment_id], filter_string=condition,
                                           order_by=["attributes.start_time DESC"], max_results=20)
            parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
            if parents:
                return parents[0].info.run_id
        return None

    def run(self, run_id: str) -> RunView:
        run = self.client.get_run(run_id)
        view = RunView(run_id=run_id, status=run.info.status, metrics=_finite(run.data.metrics),
                       start_time=run.info.start_time, end_time=run.info.end_time)
        versions = self.client.search_model_versions(f"run_id = {_quote(run_id)}")
        if versions:
            newest = max(versions, key=lambda v: int(v.version))
            view.registered_model, view.model_version = newest.name, str(newest.version)
        return view

    # ---- registry ---------------------------------------------------------------------------

    def models(self, name_prefix: str | None = None, limit: int = 100) -> list[ModelView]:
        filter_string = f"name LIKE {_quote(name_prefix.replace('%', '') + '%')}" if name_prefix else None
        models = self.client.search_registered_models(filter_string=filter_string, max_results=limit)
        return [ModelView(name=m.name, description=m.description or None, aliases={alias: str(v) for alias, v in (m.aliases or {}).items()},
                          latest_versions=[str(v.version) for v in (m.latest_versions or [])])
                for m in models]

    def model(self, name: str) -> ModelView:
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_registered_model(name)
        except MlflowException as error:
            raise NotFound(f"no registered model named {name!r}") from error
        aliases = {alias: str(v) for alias, v in (registered.aliases or {}).items()}
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        versions = []
        for version in self.client.search_model_versions(f"name = {_quote(name)}"):
            metrics: dict[str, float | None] = {}
            if version.run_id:
                try:
                    metrics = _finite(self.client.get_run(version.run_id).data.metrics)
                except MlflowException:
                    metrics = {}
            versions.append(VersionView(version=str(version.version), run_id=version.run_id,
                                        status=str(version.status), aliases=sorted(by_version.get(str(version.version), [])),
                                        created=version.creation_timestamp, metrics=metrics,
                                        contract=self._contract(name, str(version.version))))
        versions.sort(key=lambda v: int(v.version), reverse=True)
        return ModelView(name=registered.name, description=registered.description or None, aliases=aliases,
                         latest_versions=[v.version for v in versions[:1]], versions=versions)

    def _contract(self, name: str, version: str) -> dict | None:
        """The version's contract from its MLmodel file (no model loading); None when absent or unreadable."""
        from training.model_card import ContractUnreadable, version_contract

        try:
            return version_contract(self.client, name, version, self.uri)
        except ContractUnreadable:
            return None

    def model_card(self, name: str, version: str) -> str | None:
        from mlflow.exceptions import MlflowException

        from training.model_card import ContractUnreadable, version_card

        try:
            return version_card(self.client, name, version, self.uri)
        except MlflowException as error:
            raise NotFound(f"model {name!r} has no version {version!r}") from error
        except ContractUnreadable:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> ModelView:
        from mlflow.exceptions import MlflowException

        model = self.model(name)
        if version not in {v.version for v in model.versions}:
            known = ", ".join(v.version for v in model.versions) or "none"
            raise NotFound(f"model {name!r} has no version {version!r} (versions: {known})")
        try:
            self.client.set_registered_model_alias(name, alias, version)
        except MlflowException as error:
            raise ValueError(f"alias {alias!r}: {error.message}") from error
        return self.model(name)
